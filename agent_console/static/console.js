/* Nameplate agent console: the live inbox and chat pane over /ws/agent.
 *
 * One socket carries everything (welcome, queue board, assignments, messages, typing, reads); the page
 * never polls. After a drop it reconnects with back-off and says `hello {resume_after}` so the server
 * replays only what this page has not seen. Every text a person typed reaches the DOM via textContent.
 */
(() => {
  "use strict";

  const root = document.getElementById("console");
  if (!root) return;

  const ME_ID = root.dataset.agentId;
  const TRANSCRIPT_URL = root.dataset.transcriptUrl || "/supervisor/conversations/";
  const BASE_TITLE = document.title;

  // 3 s: often enough that "is typing" never lapses on the visitor's side while we type.
  const TYPING_REFRESH_MS = 3000;
  // 4 s without a keystroke: we stopped typing.
  const TYPING_IDLE_MS = 4000;
  // 8 s after the visitor's last "typing on", stop showing it even if their "off" got lost.
  const TYPING_SHOW_MS = 8000;
  // 25 s: under the idle timeout of common proxies (30–60 s), so a silent dead socket is noticed.
  const PING_EVERY_MS = 25000;
  const PONG_WITHIN_MS = 10000;
  // Back-off: 0.5 s doubling to 15 s, with jitter so a server restart is not hit by every console at once.
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  // Waiting times and local clocks are shown to the minute; a 5 s tick keeps them honest.
  const CLOCK_TICK_MS = 5000;
  const TOAST_MS = 6000;
  const CANNED_MENU_MAX = 8;

  // -- small DOM helpers ---------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function show(node, visible) { node.hidden = !visible; }

  /** Keep `parent`'s children equal to `items`, reusing nodes by key so focus and selection survive. */
  function syncChildren(parent, items, keyOf, make, update) {
    const existing = new Map();
    for (const child of parent.children) existing.set(child.dataset.key, child);
    let ref = parent.firstElementChild;
    for (const item of items) {
      const key = keyOf(item);
      let node = existing.get(key);
      if (node) existing.delete(key);
      else { node = make(item); node.dataset.key = key; }
      update(node, item);
      if (node === ref) ref = ref.nextElementSibling;
      else parent.insertBefore(node, ref);
    }
    for (const stale of existing.values()) stale.remove();
  }

  function safeHref(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  function shortPath(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.pathname + parsed.search;
    } catch (_) {
      return url || "";
    }
  }

  function randomId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function hueClass(id) {
    let hash = 0;
    for (const ch of String(id || "")) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
    return "hue-" + (hash % 6);
  }

  // -- time ----------------------------------------------------------------------------------------
  const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dayClock = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  const day = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });

  function parseTime(iso) { return iso ? new Date(iso) : null; }
  function fmtClock(iso) {
    const when = parseTime(iso);
    if (!when) return "";
    return (Date.now() - when.getTime() > 20 * 3600 * 1000 ? dayClock : clock).format(when);
  }
  function fmtDuration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min";
    const hours = Math.floor(minutes / 60);
    return hours + " h " + (minutes % 60) + " min";
  }
  function since(iso) {
    const when = parseTime(iso);
    return when ? fmtDuration((Date.now() - when.getTime()) / 1000) : "";
  }
  function ago(iso) {
    const when = parseTime(iso);
    if (!when) return "";
    const seconds = (Date.now() - when.getTime()) / 1000;
    if (seconds < 60) return "just now";
    if (seconds < 24 * 3600) return fmtDuration(seconds) + " ago";
    return day.format(when);
  }
  function localTime(timezone) {
    if (!timezone) return null;
    try {
      const fmt = new Intl.DateTimeFormat(undefined, { timeZone: timezone, weekday: "short", hour: "2-digit", minute: "2-digit" });
      return fmt.format(new Date());
    } catch (_) {
      return null;
    }
  }

  // -- state ---------------------------------------------------------------------------------------
  const state = {
    ws: null,
    connected: false,
    everConnected: false,
    attempts: 0,
    lastErrorCode: null,
    me: null,
    status: "offline",
    load: 0,
    capacity: 0,
    online: 0,
    teams: [],
    colleagues: [],
    convs: new Map(),       // id → conversation record (mine, or once mine in this page's life)
    order: [],              // ids of my active chats, in the order they came
    queue: new Map(),       // id → conversation summary, for the site's queue
    board: new Map(),       // id → {position, expected_wait_s, wait_text}
    staff: new Map(),       // agent id → {status, load, capacity}, from board frames
    fetchingSummaries: new Set(),
    customers: new Map(),   // customer id → {customer, pages, conversations} from the JSON endpoint
    recent: [],
    canned: [],
    selected: null,
    mode: "reply",
    typingConversation: null,
    unseen: 0,
  };

  function conversationRecord(summary) {
    let c = state.convs.get(summary.id);
    if (!c) {
      c = {
        id: summary.id,
        summary,
        messages: new Map(),
        pendings: new Map(),
        lastSeq: 0,
        lastVisitorSeq: 0,
        visitorReadSeq: 0,
        agentReadSeq: 0,
        quietUpTo: 0,
        typingUntil: 0,
        typingName: "",
        handoff: null,
        mine: false,
        ended: null,
        transferTarget: null,
        draft: "",
      };
      state.convs.set(summary.id, c);
    } else {
      c.summary = { ...c.summary, ...summary, customer: summary.customer || c.summary.customer };
    }
    c.visitorReadSeq = Math.max(c.visitorReadSeq, summary.visitor_read_seq || 0);
    c.agentReadSeq = Math.max(c.agentReadSeq, summary.agent_read_seq || 0);
    return c;
  }

  function customerOf(c) { return (c && c.summary && c.summary.customer) || null; }
  function customerName(customer) {
    if (!customer) return "Visitor";
    if (customer.name) return customer.name;
    return "Visitor · " + String(customer.id || "").slice(0, 4);
  }
  function unreadCount(c) {
    let count = 0;
    for (const m of c.messages.values()) {
      if (m.author && m.author.kind === "visitor" && m.seq > c.agentReadSeq) count += 1;
    }
    return count;
  }
  function lastPublicMessage(c) {
    let last = null;
    for (const m of c.messages.values()) {
      if (m.private || (m.author && m.author.kind === "system")) continue;
      if (!last || m.seq > last.seq) last = m;
    }
    return last;
  }
  function isTyping(c) { return c.typingUntil > Date.now(); }
  function isActive(c) { return c.mine && !c.ended; }
  const selected = () => (state.selected ? state.convs.get(state.selected) || null : null);

  // -- socket --------------------------------------------------------------------------------------
  let pingTimer = null;
  let pongTimer = null;
  let reconnectTimer = null;

  function socketUrl() {
    return (window.location.protocol === "https:" ? "wss://" : "ws://") + window.location.host + "/ws/agent";
  }

  function send(frame) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !state.connected) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    state.lastErrorCode = null;
    const ws = new WebSocket(socketUrl());
    state.ws = ws;
    ws.addEventListener("open", () => {
      const resume = {};
      for (const c of state.convs.values()) if (c.mine && c.lastSeq > 0) resume[c.id] = c.lastSeq;
      ws.send(JSON.stringify({ type: "hello", resume_after: resume }));
    });
    ws.addEventListener("message", (event) => {
      if (ws !== state.ws) return;
      let frame;
      try { frame = JSON.parse(event.data); } catch (_) { return; }
      if (frame && typeof frame.type === "string") handle(frame);
    });
    ws.addEventListener("close", (event) => { if (ws === state.ws) onClosed(event); });
  }

  function onClosed(event) {
    state.connected = false;
    clearInterval(pingTimer);
    clearTimeout(pongTimer);
    stopTyping();
    if (event.code === 4401) {
      if (state.lastErrorCode === "unauthorized" || state.lastErrorCode === "session_ended") {
        window.location.assign("/login");
        return;
      }
      banner("Disconnected: " + (event.reason || "the server refused this console") + ". Reload to try again.", "error");
      return;
    }
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** state.attempts) * (0.6 + Math.random() * 0.4);
    state.attempts += 1;
    banner(state.everConnected
      ? "Connection lost. Reconnecting in " + Math.ceil(delay / 1000) + " s…"
      : "Connecting…", "warn");
    reconnectTimer = setTimeout(connect, delay);
  }

  function banner(text, kind) {
    const node = $("conn-banner");
    if (!text) { show(node, false); return; }
    node.textContent = text;
    node.className = "conn-banner conn-" + (kind || "warn");
    show(node, true);
  }

  function startPinging() {
    clearInterval(pingTimer);
    pingTimer = setInterval(() => {
      if (!send({ type: "ping" })) return;
      clearTimeout(pongTimer);
      pongTimer = setTimeout(() => { if (state.ws) state.ws.close(); }, PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  window.addEventListener("online", () => { if (!state.connected && reconnectTimer) connect(); });

  // -- frames from the server ----------------------------------------------------------------------
  const handlers = {
    welcome(f) {
      state.connected = true;
      state.everConnected = true;
      state.attempts = 0;
      banner(null);
      startPinging();
      state.me = f.agent;
      state.status = f.status;
      state.capacity = f.capacity;
      state.teams = f.teams || [];
      state.colleagues = f.colleagues || [];
      const current = new Set((f.conversations || []).map((s) => s.id));
      for (const c of state.convs.values()) {
        if (c.mine && !current.has(c.id)) {
          c.mine = false;
          c.ended = c.ended || "This chat left your inbox while you were disconnected.";
        }
      }
      const ordered = [...(f.conversations || [])].sort((a, b) => String(a.assigned_at).localeCompare(String(b.assigned_at)));
      for (const summary of ordered) {
        const c = conversationRecord(summary);
        c.quietUpTo = Math.max(c.quietUpTo, summary.last_seq || 0);
        takeOn(c);
      }
      state.order = state.order.filter((id) => current.has(id));
      state.load = state.order.length;
      state.queue = new Map((f.queue || []).map((s) => [s.id, s]));
      if (!state.selected && state.order.length) select(state.order[0]);
      // Messages typed while we were away go out now; their client_id makes the retry harmless.
      for (const c of state.convs.values()) {
        if (!isActive(c)) continue;
        for (const p of c.pendings.values()) if (!p.seq) transmit(c, p);
      }
      loadRecent();
      loadCanned();
      renderAll();
    },

    status(f) {
      state.status = f.status;
      if (typeof f.load === "number") state.load = f.load;
      if (typeof f.capacity === "number") state.capacity = f.capacity;
      renderStatus();
    },

    board(f) {
      state.board = new Map((f.queue || []).map((e) => [e.conversation_id, e]));
      // Every agent's status and load: the transfer dialog shows who is there and who has room.
      state.staff = new Map((f.agents || []).map((a) => [a.id, a]));
      if ($("transfer-dialog").open) fillTransferOptions();
      for (const id of [...state.queue.keys()]) if (!state.board.has(id)) state.queue.delete(id);
      for (const id of state.board.keys()) if (!state.queue.has(id)) fetchSummary(id);
      const agents = f.agents || [];
      state.online = agents.filter((a) => a.status !== "offline").length;
      const mine = agents.find((a) => a.id === ME_ID);
      if (mine) {
        state.status = mine.status;
        state.load = mine.load;
        state.capacity = mine.capacity;
      }
      renderStatus();
      renderQueue();
    },

    conversation(f) {
      const summary = f.conversation;
      if (!summary) return;
      if (summary.status === "queued") state.queue.set(summary.id, summary);
      else state.queue.delete(summary.id);
      if (state.convs.has(summary.id)) {
        conversationRecord(summary);
        renderMine();
        if (state.selected === summary.id) renderChatHead();
      }
      renderQueue();
    },

    assigned(f) {
      const summary = f.conversation;
      const c = conversationRecord(summary);
      c.quietUpTo = Math.max(c.quietUpTo, summary.last_seq || 0);
      c.handoff = f.note || null;
      c.ended = null;
      c.transferTarget = null;
      takeOn(c);
      state.queue.delete(c.id);
      const name = customerName(customerOf(c));
      alertPerson(c.handoff ? "Chat handed to you: " + name : "New chat: " + name, c.handoff || pageLabel(customerOf(c)) || "", c.id);
      if (!state.selected) select(c.id);
      renderAll();
    },

    unassigned(f) {
      const c = state.convs.get(f.conversation_id);
      if (!c) return;
      dropFromMine(c);
      if (f.reason === "taken_over") {
        c.ended = "A supervisor took this chat over.";
        toast("A supervisor took over the chat with " + customerName(customerOf(c)) + ".", "warn");
      } else if (f.reason === "transferred") {
        c.ended = "Transferred to " + (c.transferTarget || "a colleague") + ".";
        toast("Transferred " + customerName(customerOf(c)) + " to " + (c.transferTarget || "a colleague") + ".", "ok");
      } else {
        c.ended = "Back in the queue: you were offline for too long.";
        toast(customerName(customerOf(c)) + " went back to the queue.", "warn");
      }
      renderAll();
    },

    transferred(f) {
      const c = state.convs.get(f.conversation_id);
      if (c && !c.transferTarget) c.transferTarget = f.to_agent || f.to_team || null;
    },

    closed(f) {
      const c = state.convs.get(f.conversation_id);
      if (!c) return;
      c.summary.status = "closed";
      c.typingUntil = 0;
      if (c.mine) {
        dropFromMine(c);
        c.ended = "Closed by " + (f.by || "someone") + ".";
        loadRecent();
      } else if (!c.ended) {
        c.ended = "Closed by " + (f.by || "someone") + ".";
      }
      renderAll();
    },

    message(f) {
      const c = state.convs.get(f.conversation_id);
      if (!c || c.messages.has(f.seq)) return;
      c.messages.set(f.seq, f);
      c.lastSeq = Math.max(c.lastSeq, f.seq);
      if (f.client_id && c.pendings.has(f.client_id)) {
        c.pendings.delete(f.client_id);
        renameNode("p:" + f.client_id, "s:" + f.seq);
      }
      const fromVisitor = f.author && f.author.kind === "visitor";
      if (fromVisitor) {
        c.lastVisitorSeq = Math.max(c.lastVisitorSeq, f.seq);
        c.typingUntil = 0;
        if (isActive(c) && f.seq > c.quietUpTo && f.seq > c.agentReadSeq
            && (document.hidden || state.selected !== c.id)) {
          alertPerson(customerName(customerOf(c)), f.body, c.id);
        }
      }
      if (state.selected === c.id) {
        renderMessages(c, fromVisitor ? "incoming" : "own");
        markRead(c);
        renderTyping();
      }
      renderMine();
    },

    ack(f) {
      const c = state.convs.get(f.conversation_id);
      if (!c) return;
      const pending = c.pendings.get(f.client_id);
      if (pending) pending.seq = f.seq;
      if (state.selected === c.id) renderMessages(c);
    },

    read(f) {
      const c = state.convs.get(f.conversation_id);
      if (!c) return;
      if (f.by === "visitor") c.visitorReadSeq = Math.max(c.visitorReadSeq, f.seq);
      else c.agentReadSeq = Math.max(c.agentReadSeq, f.seq);
      if (state.selected === c.id) renderMessages(c);
      renderMine();
    },

    typing(f) {
      if (f.by !== "visitor") return;
      const c = state.convs.get(f.conversation_id);
      if (!c) return;
      c.typingUntil = f.on ? Date.now() + TYPING_SHOW_MS : 0;
      c.typingName = f.name || "";
      if (f.on) setTimeout(() => { renderTyping(); renderMine(); }, TYPING_SHOW_MS + 50);
      renderTyping();
      renderMine();
    },

    page(f) {
      pageEpochs.set(f.customer_id, (pageEpochs.get(f.customer_id) || 0) + 1);
      for (const c of state.convs.values()) {
        const customer = customerOf(c);
        if (customer && customer.id === f.customer_id) {
          customer.current_url = f.url;
          customer.current_title = f.title;
        }
      }
      const detail = state.customers.get(f.customer_id);
      if (detail) {
        detail.customer.current_url = f.url;
        detail.customer.current_title = f.title;
        detail.pages.unshift({ url: f.url, title: f.title, at: new Date().toISOString() });
      }
      const c = selected();
      if (c && customerOf(c) && customerOf(c).id === f.customer_id) {
        renderChatHead();
        renderCustomer();
      }
      renderMine();
    },

    rating() { loadRecent(); },

    customer_event(f) {
      const detail = state.customers.get(f.customer_id);
      if (detail) {
        detail.events = [f.event, ...(detail.events || []).filter((e) => e.id !== f.event.id)];
        const c = selected();
        if (c && customerOf(c) && customerOf(c).id === f.customer_id) renderCustomer();
      } else {
        loadCustomer(f.customer_id);
      }
    },

    error(f) {
      state.lastErrorCode = f.code;
      if (f.code === "unauthorized" || f.code === "session_ended") return;
      if (f.code === "colleague_unavailable") { const c = selected(); if (c) c.transferTarget = null; }
      toast(f.message || "Something went wrong.", "error");
    },

    pong() { clearTimeout(pongTimer); },
  };

  function handle(frame) {
    const handler = handlers[frame.type];
    if (handler) handler(frame);
  }

  function takeOn(c) {
    c.mine = true;
    c.ended = null;
    if (!state.order.includes(c.id)) state.order.push(c.id);
  }

  function dropFromMine(c) {
    c.mine = false;
    c.pendings.clear();
    state.order = state.order.filter((id) => id !== c.id);
  }

  // -- HTTP look-ups -------------------------------------------------------------------------------
  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) { window.location.assign("/login"); throw new Error("signed out"); }
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  async function fetchSummary(id) {
    if (state.fetchingSummaries.has(id)) return;
    state.fetchingSummaries.add(id);
    try {
      const data = await getJson("/console/api/conversations/" + encodeURIComponent(id));
      if (data.conversation && data.conversation.status === "queued" && state.board.has(id)) {
        state.queue.set(id, data.conversation);
        renderQueue();
      }
    } catch (_) {
      /* it left the queue meanwhile, or the network blinked: the next board frame tells */
    } finally {
      state.fetchingSummaries.delete(id);
    }
  }

  async function loadRecent() {
    try {
      state.recent = (await getJson("/console/api/recent")).conversations || [];
      renderRecent();
    } catch (_) { /* shown again on the next close */ }
  }

  async function loadCanned() {
    try {
      state.canned = (await getJson("/console/api/canned")).canned || [];
    } catch (_) { /* the composer simply offers nothing */ }
  }

  const pageEpochs = new Map();  // customer id → page frames seen, to spot one landing mid-fetch

  async function loadCustomer(customerId, attempt = 0) {
    if (!customerId) return;
    try {
      const epoch = pageEpochs.get(customerId) || 0;
      const data = await getJson("/console/api/customers/" + encodeURIComponent(customerId));
      // A page frame that arrived while this was in flight may be newer than the answer: ask again.
      if ((pageEpochs.get(customerId) || 0) !== epoch && attempt < 3) return loadCustomer(customerId, attempt + 1);
      state.customers.set(customerId, data);
      const c = selected();
      if (c && customerOf(c) && customerOf(c).id === customerId) renderCustomer();
    } catch (_) { /* the sidebar keeps what the summary said */ }
  }

  // -- rendering: inbox ----------------------------------------------------------------------------
  function renderAll() {
    renderStatus();
    renderQueue();
    renderMine();
    renderRecent();
    renderChat();
  }

  function renderStatus() {
    for (const button of root.querySelectorAll(".status-option")) {
      button.setAttribute("aria-checked", String(button.dataset.status === state.status));
    }
    root.dataset.status = state.status;
    const capacity = state.capacity || 0;
    $("load-text").textContent = state.connected || state.everConnected
      ? state.load + " of " + capacity + " chat" + (capacity === 1 ? "" : "s")
      : "–";
    $("load-fill").style.width = capacity ? Math.min(100, (100 * state.load) / capacity) + "%" : "0";
    $("load").classList.toggle("full", capacity > 0 && state.load >= capacity);
  }

  function pageLabel(customer) {
    if (!customer || !customer.current_url) return "";
    return customer.current_title || shortPath(customer.current_url);
  }

  function renderQueue() {
    const entries = [...state.queue.values()].sort((a, b) => {
      const pa = state.board.get(a.id), pb = state.board.get(b.id);
      if (pa && pb) return pa.position - pb.position;
      if (pa || pb) return pa ? -1 : 1;
      return String(a.created_at).localeCompare(String(b.created_at));
    });
    const teams = new Map(state.teams.map((t) => [t.id, t.name]));
    syncChildren($("queue-list"), entries, (s) => s.id, () => {
      const li = el("li", "queue-item");
      const top = el("div", "row-top");
      top.append(el("span", "name"), el("span", "wait"));
      li.append(top, el("div", "row-sub page"), el("div", "row-sub eta"));
      return li;
    }, (li, s) => {
      const customer = s.customer;
      const spot = state.board.get(s.id);
      li.querySelector(".name").textContent = customerName(customer);
      li.querySelector(".wait").textContent = "waiting " + since(s.created_at);
      const page = pageLabel(customer);
      li.querySelector(".page").textContent = page ? "on " + page : "no page yet";
      const bits = [];
      if (spot) bits.push("#" + spot.position + " in line");
      if (spot && spot.wait_text) bits.push(spot.wait_text);  // the visitor's own sentence (routing/wait_time.py)
      if (s.team_id && teams.has(s.team_id)) bits.push(teams.get(s.team_id));
      if (s.previous_agent) bits.push("returning · last with " + s.previous_agent.given_name);
      li.querySelector(".eta").textContent = bits.join(" · ");
    });
    $("queue-count").textContent = String(entries.length);
    $("queue-count").classList.toggle("count-hot", entries.length > 0);
    $("online").textContent = state.online ? state.online + " online" : "";
    show($("queue-empty"), entries.length === 0);
  }

  // Who wrote the last line: "You:" only for this agent's own; a colleague's (before a transfer) by name.
  function previewOf(m) {
    if (m.author.kind !== "agent") return m.body;
    const who = m.author.id === ME_ID ? "You" : m.author.given_name || m.author.name || "Colleague";
    return who + ": " + m.body;
  }

  function renderMine() {
    const mine = state.order.map((id) => state.convs.get(id)).filter(Boolean);
    syncChildren($("mine-list"), mine, (c) => c.id, (c) => {
      const li = el("li", "chat-item");
      const button = el("button", "chat-link");
      button.type = "button";
      button.addEventListener("click", () => select(c.id, true));
      const avatar = el("span", "avatar avatar-sm avatar-initial");
      avatar.setAttribute("aria-hidden", "true");
      const body = el("span", "chat-link-body");
      const top = el("span", "row-top");
      top.append(el("span", "name"), el("span", "badge-unread"));
      body.append(top, el("span", "row-sub preview"));
      button.append(avatar, body);
      li.append(button);
      return li;
    }, (li, c) => {
      const customer = customerOf(c);
      const name = customerName(customer);
      const avatar = li.querySelector(".avatar");
      avatar.textContent = name.slice(0, 1).toUpperCase();
      avatar.className = "avatar avatar-sm avatar-initial " + hueClass(customer && customer.id);
      li.querySelector(".name").textContent = name;
      const unread = state.selected === c.id && !document.hidden ? 0 : unreadCount(c);
      const badge = li.querySelector(".badge-unread");
      badge.textContent = unread ? String(unread) : "";
      badge.hidden = !unread;
      badge.setAttribute("aria-label", unread + " unread");
      const preview = li.querySelector(".preview");
      const last = lastPublicMessage(c);
      preview.classList.toggle("typing-now", isTyping(c));
      preview.textContent = isTyping(c) ? "typing…" : last ? previewOf(last) : pageLabel(customer);
      const button = li.querySelector("button");
      if (state.selected === c.id) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
      li.classList.toggle("has-unread", unread > 0);
    });
    $("mine-count").textContent = String(mine.length);
    show($("mine-empty"), mine.length === 0);
    updateTitle();
  }

  function renderRecent() {
    const items = state.recent;
    syncChildren($("recent-list"), items, (r) => r.id, () => {
      const li = el("li", "recent-item");
      const link = el("a", "recent-link");
      link.target = "_blank";
      link.rel = "noopener";
      const top = el("span", "row-top");
      top.append(el("span", "name"), el("span", "rating"));
      link.append(top, el("span", "row-sub when"));
      li.append(link);
      return li;
    }, (li, r) => {
      const link = li.querySelector("a");
      link.href = TRANSCRIPT_URL + encodeURIComponent(r.id);
      li.querySelector(".name").textContent = customerName(r.customer);
      li.querySelector(".rating").textContent = r.rating ? "★ " + r.rating.score + "/5" : "";
      li.querySelector(".when").textContent = "closed " + ago(r.closed_at) + " · " + r.messages + " messages";
    });
    show($("recent-empty"), items.length === 0);
  }

  // -- rendering: chat pane ------------------------------------------------------------------------
  let renderedConversation = null;

  function renderChat() {
    const c = selected();
    show($("chat"), !!c);
    show($("chat-placeholder"), !c);
    show($("customer"), !!c);
    if (!c) { renderedConversation = null; return; }
    renderChatHead();
    renderMessages(c);
    renderTyping();
    renderCustomer();
  }

  function renderChatHead() {
    const c = selected();
    if (!c) return;
    const customer = customerOf(c);
    const name = customerName(customer);
    $("chat-title").textContent = name;
    const avatar = $("chat-avatar");
    avatar.textContent = name.slice(0, 1).toUpperCase();
    avatar.className = "avatar avatar-md avatar-initial " + hueClass(customer && customer.id);
    const bits = [];
    const page = pageLabel(customer);
    if (page) bits.push("on " + page);
    if (c.summary.assigned_at && isActive(c)) bits.push("with you for " + since(c.summary.assigned_at));
    $("chat-sub").textContent = bits.join(" · ");
    const active = isActive(c);
    $("transfer-btn").disabled = !active;
    $("close-btn").disabled = !active;
    show($("handoff"), !!c.handoff);
    $("handoff-text").textContent = c.handoff || "";
    show($("ended"), !!c.ended);
    $("ended").textContent = c.ended || "";
    show($("composer"), active);
    show($("email-btn"), active && !!mailAddress(c));
  }

  function renameNode(fromKey, toKey) {
    for (const node of $("messages").children) {
      if (node.dataset.key === fromKey) { node.dataset.key = toKey; return; }
    }
  }

  function messageItems(c) {
    const items = [...c.messages.values()].sort((a, b) => a.seq - b.seq);
    for (const p of c.pendings.values()) items.push({ pending: true, ...p });
    return items;
  }

  function receiptOf(c, m) {
    if (m.pending && !m.seq) return "sending";
    return m.seq <= c.visitorReadSeq ? "read" : "sent";
  }

  function makeMessage(m) {
    const li = el("li", "msg");
    const kind = m.author ? m.author.kind : "agent";
    if (kind === "system") {
      li.classList.add("msg-system");
      if (m.private) li.classList.add("msg-private");
      if (m.private && /^Hand-off note from /.test(m.body)) li.classList.add("msg-handoff");
      const line = el("p", "msg-line");
      if (m.private) line.append(el("span", "only-staff", "Only agents"));
      line.append(el("span", "msg-text", m.body), el("time", "msg-time", fmtClock(m.sent_at)));
      li.append(line);
      return li;
    }
    const note = m.pending ? m.note : m.private;
    const whisper = !m.pending && m.visibility === "whisper";
    const mineMsg = m.pending || (kind === "agent" && m.author.id === ME_ID);
    if (note) li.classList.add("msg-note");
    if (whisper) li.classList.add("msg-whisper");
    else if (kind === "visitor") li.classList.add("msg-in");
    else li.classList.add("msg-out");
    if (kind === "agent" && !mineMsg) li.classList.add("msg-colleague");
    const meta = el("div", "msg-meta");
    const who = whisper ? "Whisper from " + m.author.name + " · the customer does not see it" : note ? "Private note · " + (mineMsg ? "you" : m.author.name) : kind === "visitor" ? (m.author.name || "Visitor") : mineMsg ? "You" : m.author.name;
    meta.append(el("span", "msg-author", who), el("time", "msg-time", m.pending ? "" : fmtClock(m.sent_at)));
    // A reply that came back by e-mail (server/mail stores it with a "mail:" client_id).
    if (kind === "visitor" && /^mail:/.test(m.client_id || "")) meta.append(el("span", "msg-via", "by e-mail"));
    if (mineMsg && !note) meta.append(el("span", "receipt"));
    li.append(el("div", "msg-body", m.body), meta);
    return li;
  }

  function updateMessage(c) {
    return (li, m) => {
      const receipt = li.querySelector(".receipt");
      const time = li.querySelector(".msg-time");
      if (time && !time.textContent && m.sent_at) time.textContent = fmtClock(m.sent_at);
      if (!receipt) return;
      const stateName = receiptOf(c, m);
      li.dataset.state = stateName;
      receipt.textContent = stateName === "sending" ? "Sending…" : stateName === "read" ? "Read" : "Sent";
    };
  }

  function renderMessages(c, cause) {
    const list = $("messages");
    if (renderedConversation !== c.id) {
      list.replaceChildren();
      renderedConversation = c.id;
      cause = "switch";
    }
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 120;
    syncChildren(list, messageItems(c), (m) => (m.pending ? "p:" + m.client_id : "s:" + m.seq), makeMessage, updateMessage(c));
    if (cause === "switch" || cause === "own" || nearBottom) list.scrollTop = list.scrollHeight;
  }

  function renderTyping() {
    const c = selected();
    const node = $("typing");
    if (c && isTyping(c) && isActive(c)) {
      node.textContent = (c.typingName || customerName(customerOf(c))) + " is typing…";
      node.classList.add("on");
    } else {
      node.textContent = "";
      node.classList.remove("on");
    }
  }

  function renderCustomer() {
    const c = selected();
    if (!c) return;
    const base = customerOf(c) || {};
    const detail = state.customers.get(base.id);
    const customer = detail ? { ...detail.customer, current_url: base.current_url || detail.customer.current_url,
      current_title: base.current_title || detail.customer.current_title } : base;
    const name = customerName(customer);
    $("cust-name").textContent = name;
    const avatar = $("cust-avatar");
    avatar.textContent = name.slice(0, 1).toUpperCase();
    avatar.className = "avatar avatar-lg avatar-initial " + hueClass(customer.id);
    const mailTo = mailAddress(c);
    $("cust-email").textContent = customer.email || (mailTo ? mailTo + " (left with an offline message)" : "No e-mail given");
    show($("transcript-btn"), !!mailTo);
    const verified = $("cust-verified");
    verified.textContent = customer.verified ? "Verified" : "Not verified";
    verified.className = "badge " + (customer.verified ? "badge-ok" : "badge-muted");
    verified.title = customer.verified
      ? "The website vouched for this identity (signed user id)."
      : "Anyone could have typed this name and e-mail.";
    const local = localTime(customer.timezone);
    $("cust-time").textContent = local ? local + " (" + customer.timezone + ")" : "Unknown";
    const page = $("cust-page");
    page.replaceChildren();
    if (customer.current_url) {
      const href = safeHref(customer.current_url);
      const label = customer.current_title || shortPath(customer.current_url);
      if (href) {
        const link = el("a", null, label);
        link.href = href;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        link.title = customer.current_url;
        page.append(link);
      } else {
        page.textContent = label;
      }
    } else {
      page.textContent = "Unknown";
    }
    $("cust-locale").textContent = customer.locale || "Unknown";

    const attrs = Object.entries(customer.attributes || {});
    const attrList = $("cust-attrs");
    attrList.replaceChildren();
    for (const [key, value] of attrs) {
      const row = el("div", "attr");
      row.append(el("dt", null, key), el("dd", null, typeof value === "string" ? value : JSON.stringify(value)));
      attrList.append(row);
    }
    show($("cust-attrs-empty"), attrs.length === 0);

    const pages = detail ? detail.pages : [];
    const pageList = $("cust-pages");
    pageList.replaceChildren();
    for (const p of pages.slice(0, 20)) {
      const li = el("li");
      li.append(el("span", "page-title", p.title || shortPath(p.url)), el("span", "page-url", shortPath(p.url)),
        el("time", "page-time", fmtClock(p.at)));
      li.title = p.url;
      pageList.append(li);
    }
    show($("cust-pages-empty"), pages.length === 0);

    const chats = detail ? detail.conversations.filter((h) => h.id !== c.id) : [];
    const events = detail ? detail.events || [] : [];
    // One timeline: earlier chats and contacts on other channels, newest first.
    const history = [...chats.map((h) => ({ at: h.created_at, chat: h })), ...events.map((e) => ({ at: e.at, event: e }))]
      .sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
    const historyList = $("cust-history");
    historyList.replaceChildren();
    for (const item of history) {
      const li = el("li");
      if (item.event) {
        const e = item.event;
        li.className = "timeline-event";
        const top = el("span", "row-top");
        top.append(el("span", "history-date", day.format(new Date(e.at))), el("span", "channel", e.channel));
        li.append(top, el("span", "row-sub", e.summary));
        if (e.details) li.append(el("span", "row-sub quote", e.details));
        if (e.agent_email) li.append(el("span", "row-sub", "by " + e.agent_email));
        historyList.append(li);
        continue;
      }
      const h = item.chat;
      const link = el("a", "history-link");
      link.href = TRANSCRIPT_URL + encodeURIComponent(h.id);
      link.target = "_blank";
      link.rel = "noopener";
      const top = el("span", "row-top");
      top.append(el("span", "history-date", day.format(new Date(h.created_at))),
        el("span", "rating", h.rating ? "★ " + h.rating.score + "/5" : h.status === "closed" ? "" : h.status));
      link.append(top, el("span", "row-sub", "Chat with " + (h.agent ? h.agent.name : "no agent") + " · " + h.messages + " messages"));
      if (h.rating && h.rating.comment) link.append(el("span", "row-sub quote", "“" + h.rating.comment + "”"));
      li.append(link);
      historyList.append(li);
    }
    show($("cust-history-empty"), history.length === 0);
  }

  // -- selecting, reading ------------------------------------------------------------------------
  function select(id, focus) {
    const previous = selected();
    const input = $("composer-input");
    if (previous && previous.id !== id) {
      previous.draft = input.value;
      stopTyping();
    }
    state.selected = id;
    const c = selected();
    if (!c) { renderChat(); return; }
    if (!previous || previous.id !== id) {
      input.value = c.draft || "";
      setMode("reply");
      hideCanned();
      disarmClose();
    }
    renderChat();
    renderMine();
    markRead(c);
    const customer = customerOf(c);
    if (customer && customer.id) loadCustomer(customer.id);
    if (focus && isActive(c)) input.focus();
  }

  function markRead(c) {
    if (!c || document.hidden || state.selected !== c.id || !isActive(c)) return;
    if (c.lastSeq > c.agentReadSeq && c.lastVisitorSeq > c.agentReadSeq) {
      if (send({ type: "read", conversation_id: c.id, seq: c.lastSeq })) c.agentReadSeq = c.lastSeq;
    }
  }

  // -- composing -----------------------------------------------------------------------------------
  let typingOn = false;
  let typingSentAt = 0;
  let typingIdle = null;

  function stopTyping() {
    clearTimeout(typingIdle);
    if (typingOn && state.typingConversation) {
      send({ type: "typing", conversation_id: state.typingConversation, on: false });
    }
    typingOn = false;
  }

  function noteTyping(c) {
    if (state.mode !== "reply" || !isActive(c)) return;
    const now = Date.now();
    if (!typingOn || now - typingSentAt > TYPING_REFRESH_MS) {
      if (send({ type: "typing", conversation_id: c.id, on: true })) {
        typingOn = true;
        typingSentAt = now;
        state.typingConversation = c.id;
      }
    }
    clearTimeout(typingIdle);
    typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function transmit(c, pending) {
    const frame = pending.note
      ? { type: "note", conversation_id: c.id, client_id: pending.client_id, body: pending.body }
      : { type: "message", conversation_id: c.id, client_id: pending.client_id, body: pending.body };
    return send(frame);
  }

  function submitComposer() {
    const c = selected();
    const input = $("composer-input");
    const body = input.value.trim();
    if (!c || !isActive(c) || !body) return;
    const pending = { client_id: randomId(), body, note: state.mode === "note", sent_at: null };
    c.pendings.set(pending.client_id, pending);
    if (!pending.note) stopTyping();
    transmit(c, pending);  // if the socket is down it goes out after the reconnect's welcome
    input.value = "";
    c.draft = "";
    hideCanned();
    if (pending.note) setMode("reply");
    renderMessages(c, "own");
  }

  // -- e-mail (server/mail): reply by e-mail, send the transcript ---------------------------------------
  function mailAddress(c) {
    const customer = customerOf(c) || {};
    return (c && c.summary && c.summary.offline_email) || customer.email || null;
  }

  async function postMail(path, payload) {
    const token = document.querySelector('meta[name="csrf-token"]').content;
    const response = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": token },
      body: JSON.stringify(payload),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error((data.error && data.error.message) || "the mail could not be queued");
    return data;
  }

  async function replyByEmail() {
    const c = selected();
    const input = $("composer-input");
    const body = input.value.trim();
    if (!c || !isActive(c) || !body || state.mode === "note") return;
    try {
      const data = await postMail("/console/api/conversations/" + encodeURIComponent(c.id) + "/email-reply", { body });
      input.value = "";
      c.draft = "";
      $("mail-note").textContent = "Reply posted and mailed to " + data.mail.to + ".";
    } catch (error) {
      $("mail-note").textContent = "Not sent: " + error.message;
    }
  }

  async function sendTranscript() {
    const c = selected();
    if (!c) return;
    try {
      const data = await postMail("/console/api/conversations/" + encodeURIComponent(c.id) + "/transcript-mail", {});
      $("mail-note").textContent = "Transcript mailed to " + data.mail.to + ".";
    } catch (error) {
      $("mail-note").textContent = "Not sent: " + error.message;
    }
  }

  function setMode(mode) {
    state.mode = mode;
    for (const tab of root.querySelectorAll(".composer-tabs [data-mode]")) {
      tab.setAttribute("aria-selected", String(tab.dataset.mode === mode));
    }
    $("composer").classList.toggle("note-mode", mode === "note");
    $("composer-hint").textContent = mode === "note" ? "Only agents and supervisors see notes" : "Visible to the visitor";
    $("send-btn").textContent = mode === "note" ? "Add note" : "Send";
    $("composer-input").placeholder = mode === "note"
      ? "Write a private note for colleagues… Enter adds it"
      : "Write a reply… Enter sends, Shift+Enter for a new line, / for canned responses";
    if (mode === "note") stopTyping();
  }

  // -- canned responses in the composer ------------------------------------------------------------
  let cannedChoices = [];
  let cannedIndex = 0;

  function cannedToken() {
    const input = $("composer-input");
    const before = input.value.slice(0, input.selectionStart);
    const match = /(^|\s)\/([A-Za-z0-9_-]*)$/.exec(before);
    return match ? { prefix: match[2].toLowerCase(), start: before.length - match[2].length - 1 } : null;
  }

  function updateCanned() {
    const token = cannedToken();
    if (!token || !state.canned.length) { hideCanned(); return; }
    cannedChoices = state.canned.filter((c) => c.shortcut.startsWith(token.prefix)).slice(0, CANNED_MENU_MAX);
    if (!cannedChoices.length) { hideCanned(); return; }
    cannedIndex = Math.min(cannedIndex, cannedChoices.length - 1);
    const menu = $("canned-menu");
    menu.replaceChildren();
    cannedChoices.forEach((choice, index) => {
      const li = el("li", "canned-option");
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", String(index === cannedIndex));
      li.append(el("span", "canned-shortcut", "/" + choice.shortcut), el("span", "canned-body", choice.body));
      li.addEventListener("mousedown", (event) => { event.preventDefault(); insertCanned(index); });
      menu.append(li);
    });
    show(menu, true);
  }

  function hideCanned() {
    cannedChoices = [];
    cannedIndex = 0;
    show($("canned-menu"), false);
  }

  function insertCanned(index) {
    const choice = cannedChoices[index];
    const token = cannedToken();
    if (!choice || !token) return;
    const input = $("composer-input");
    const caret = input.selectionStart;
    input.value = input.value.slice(0, token.start) + choice.body + input.value.slice(caret);
    const at = token.start + choice.body.length;
    input.setSelectionRange(at, at);
    hideCanned();
    input.focus();
  }

  // -- transfer and close ----------------------------------------------------------------------------
  function openTransfer() {
    const c = selected();
    if (!c || !isActive(c)) return;
    fillTransferOptions();
    $("transfer-note").value = "";
    $("transfer-dialog").showModal();
    $("transfer-to").focus();
  }

  // The choices with each colleague's presence and load; filled again when a board frame arrives while the
  // dialog is open, keeping the choice made if it can still take the chat.
  function fillTransferOptions() {
    const previous = $("transfer-to").value;
    const colleagues = $("transfer-colleagues");
    const teams = $("transfer-teams");
    colleagues.replaceChildren();
    teams.replaceChildren();
    const people = state.colleagues.map((person) => {
      const live = (state.staff && state.staff.get(person.id)) || { status: "offline", load: 0, capacity: 0 };
      const full = live.load >= live.capacity;
      const ready = live.status === "available" && !full;
      const presence = live.status === "available"
        ? (full ? `Full, ${live.load} of ${live.capacity} chats` : `Available, ${live.load} of ${live.capacity} chats`)
        : live.status === "away" ? "Away" : "Offline";
      return { person, ready, presence };
    });
    // Those who can take it first; the others are listed (so nobody wonders where they went) but cannot be chosen.
    people.sort((a, b) => Number(b.ready) - Number(a.ready));
    let chosen = false;
    for (const { person, ready, presence } of people) {
      const option = el("option", null, person.name + (person.title ? " — " + person.title : "") + " · " + presence);
      option.value = "agent:" + person.id;
      option.dataset.label = person.name;
      option.dataset.presence = ready ? "ready" : "unavailable";
      option.disabled = !ready;
      if (ready && !chosen) { option.selected = true; chosen = true; }
      colleagues.append(option);
    }
    for (const team of state.teams) {
      const option = el("option", null, team.name + " · queued, first in line");
      option.value = "team:" + team.id;
      option.dataset.label = team.name;
      if (!chosen) { option.selected = true; chosen = true; }
      teams.append(option);
    }
    const keep = [...$("transfer-to").options].find((o) => o.value === previous && !o.disabled);
    if (keep) keep.selected = true;
  }

  function submitTransfer(event) {
    event.preventDefault();
    const c = selected();
    const option = $("transfer-to").selectedOptions[0];
    if (!c || !option) return;
    const [kind, id] = option.value.split(":");
    const frame = { type: "transfer", conversation_id: c.id, note: $("transfer-note").value.trim() };
    if (kind === "agent") frame.to_agent = id; else frame.to_team = id;
    if (!send(frame)) { toast("Not connected; try again in a moment.", "error"); return; }
    c.transferTarget = option.dataset.label;
    $("transfer-dialog").close();
    toast("Transferring to " + option.dataset.label + "…", "info");
  }

  let closeArmed = null;
  function disarmClose() {
    clearTimeout(closeArmed);
    closeArmed = null;
    const button = $("close-btn");
    button.textContent = "Close chat";
    button.classList.remove("armed");
  }
  function closeClicked() {
    const c = selected();
    if (!c || !isActive(c)) return;
    if (!closeArmed) {
      const button = $("close-btn");
      button.textContent = "Confirm close";
      button.classList.add("armed");
      closeArmed = setTimeout(disarmClose, 4000);
      return;
    }
    disarmClose();
    if (!send({ type: "close", conversation_id: c.id })) toast("Not connected; try again in a moment.", "error");
  }

  // -- attention: title count, sound, desktop notifications --------------------------------------
  let audio = null;
  function unlockAudio() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    if (!audio) audio = new Context();
    if (audio.state === "suspended") audio.resume();
  }
  function beep() {
    if (!audio || audio.state !== "running") return;
    const t = audio.currentTime;
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = "sine";
    osc.frequency.setValueAtTime(880, t);
    osc.frequency.setValueAtTime(660, t + 0.09);
    gain.gain.setValueAtTime(0.0001, t);
    gain.gain.exponentialRampToValueAtTime(0.12, t + 0.01);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.25);
    osc.connect(gain).connect(audio.destination);
    osc.start(t);
    osc.stop(t + 0.26);
  }

  function alertPerson(title, body, conversationId) {
    if (!document.hidden) return;
    state.unseen += 1;
    updateTitle();
    beep();
    if ("Notification" in window && Notification.permission === "granted") {
      try {
        const notification = new Notification(title, { body: String(body || "").slice(0, 160), tag: "nameplate-" + conversationId });
        notification.addEventListener("click", () => { window.focus(); select(conversationId, true); notification.close(); });
      } catch (_) { /* some platforms only allow notifications from a service worker */ }
    }
  }

  function updateTitle() {
    document.title = state.unseen > 0 ? "(" + state.unseen + ") " + BASE_TITLE : BASE_TITLE;
  }

  function renderNotifyButton() {
    const button = $("notify-btn");
    const note = $("notify-state");
    if (!("Notification" in window)) { show(button, false); note.textContent = ""; return; }
    show(button, Notification.permission === "default");
    note.textContent = Notification.permission === "granted" ? "Desktop notifications are on."
      : Notification.permission === "denied" ? "Desktop notifications are blocked in this browser's site settings." : "";
  }

  // -- toasts --------------------------------------------------------------------------------------
  function toast(text, kind) {
    const node = el("div", "toast toast-" + (kind || "info"), text);
    $("toasts").append(node);
    setTimeout(() => node.remove(), TOAST_MS);
  }

  // -- wiring --------------------------------------------------------------------------------------
  for (const button of root.querySelectorAll(".status-option")) {
    // The toggle shows what the server says (its `status` frame follows at once), never a guess.
    button.addEventListener("click", () => {
      if (!send({ type: "status", status: button.dataset.status })) toast("Not connected; try again in a moment.", "error");
    });
  }
  for (const tab of root.querySelectorAll(".composer-tabs [data-mode]")) {
    tab.addEventListener("click", () => { setMode(tab.dataset.mode); $("composer-input").focus(); });
  }

  const input = $("composer-input");
  input.addEventListener("keydown", (event) => {
    if (cannedChoices.length) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        const step = event.key === "ArrowDown" ? 1 : -1;
        cannedIndex = (cannedIndex + step + cannedChoices.length) % cannedChoices.length;
        updateCanned();
        return;
      }
      if ((event.key === "Enter" && !event.shiftKey) || event.key === "Tab") {
        event.preventDefault();
        insertCanned(cannedIndex);
        return;
      }
      if (event.key === "Escape") { event.preventDefault(); hideCanned(); return; }
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submitComposer();
    }
  });
  input.addEventListener("input", () => {
    const c = selected();
    if (c) { c.draft = input.value; noteTyping(c); }
    updateCanned();
  });
  input.addEventListener("blur", () => setTimeout(hideCanned, 150));
  $("composer").addEventListener("submit", (event) => { event.preventDefault(); submitComposer(); });
  $("email-btn").addEventListener("click", replyByEmail);
  $("transcript-btn").addEventListener("click", sendTranscript);

  $("transfer-btn").addEventListener("click", openTransfer);
  $("transfer-form").addEventListener("submit", submitTransfer);
  $("transfer-cancel").addEventListener("click", () => $("transfer-dialog").close());
  $("close-btn").addEventListener("click", closeClicked);

  $("notify-btn").addEventListener("click", async () => {
    unlockAudio();
    try { await Notification.requestPermission(); } catch (_) { /* older browsers: callback form only */ }
    renderNotifyButton();
  });

  // The customer drawer (narrow windows): opened by its button, closed by its own button or Escape.
  function setDrawer(open) {
    $("customer").classList.toggle("drawer-open", open);
    $("customer-toggle").setAttribute("aria-expanded", String(open));
    if (open) $("customer-close").focus();
  }
  const drawerOpen = () => $("customer").classList.contains("drawer-open");
  $("customer-toggle").addEventListener("click", () => setDrawer(!drawerOpen()));
  $("customer-close").addEventListener("click", () => { setDrawer(false); $("customer-toggle").focus(); });

  document.addEventListener("pointerdown", unlockAudio);
  document.addEventListener("keydown", (event) => {
    unlockAudio();
    if (event.key === "Escape" && drawerOpen() && !event.defaultPrevented && !$("transfer-dialog").open) {
      setDrawer(false);
      $("customer-toggle").focus();
      return;
    }
    if (!event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (!state.order.length) return;
      event.preventDefault();
      const at = state.order.indexOf(state.selected);
      const step = event.key === "ArrowDown" ? 1 : -1;
      const next = at < 0 ? 0 : (at + step + state.order.length) % state.order.length;
      select(state.order[next], true);
    } else if (event.code === "KeyN") {
      event.preventDefault();
      setMode(state.mode === "note" ? "reply" : "note");
      $("composer-input").focus();
    }
  });

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    if (state.connected) loadCanned();  // a colleague may have added responses meanwhile
    state.unseen = 0;
    updateTitle();
    const c = selected();
    if (c) markRead(c);
    renderMine();
  });

  setInterval(() => {
    renderQueue();
    const c = selected();
    if (c) { renderChatHead(); renderTyping(); }
    const time = $("cust-time");
    if (c && !time.hidden) {
      const customer = customerOf(c) || {};
      const local = localTime(customer.timezone);
      if (local) time.textContent = local + " (" + customer.timezone + ")";
    }
  }, CLOCK_TICK_MS);

  setMode("reply");
  renderNotifyButton();
  renderAll();
  // Say "Connecting…" only if it takes long enough to notice (1 s); usually the welcome comes first.
  setTimeout(() => { if (!state.everConnected && !state.connected) banner("Connecting…", "warn"); }, 1000);
  connect();
})();
