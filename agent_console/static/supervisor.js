// Supervisor desk: confirmation for destructive forms, and the live board over /ws/agent.
// Everything people typed is put on the page with textContent, never as HTML.
(() => {
  "use strict";

  // -- forms that ask first ------------------------------------------------------------------------------
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  const root = document.getElementById("live");
  if (!root) return;

  // -- small helpers -------------------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  const clock = (iso) => {
    const moment = iso ? new Date(iso) : null;
    return moment && !Number.isNaN(moment.getTime())
      ? moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : "";
  };
  const since = (iso) => {
    const start = iso ? new Date(iso).getTime() : NaN;
    if (Number.isNaN(start)) return "";
    const seconds = Math.max(0, Math.floor((Date.now() - start) / 1000));
    if (seconds < 60) return `${seconds} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min`;
    return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
  };
  const customerName = (summary) => (summary.customer && summary.customer.name) || "Visitor";

  // -- state ---------------------------------------------------------------------------------------------
  const state = {
    me: null,
    myStatus: null,
    conversations: new Map(), // id -> summary (queued and active only)
    queue: new Map(), // id -> {position, expected_wait_s, wait_text}
    agents: new Map(), // id -> {status, load, capacity}
    names: new Map(), // agent id -> full name
    teams: new Map(), // team id -> name
    watching: null,
    watched: null, // summary of the watched conversation
    lines: new Map(), // seq -> message frame of the watched conversation
  };

  // The snapshot is fetched after the socket is subscribed; frames arriving meanwhile wait in `buffer` and
  // are applied after it, so nothing that changed between the two is lost or rolled back.
  const BUFFERED = new Set(["conversation", "assigned", "board"]);
  let buffer = null;
  let loading = false;
  let loadAgain = false;
  let socket = null;
  let retry = 0;
  let resyncTimer = null;
  let typingTimer = null;
  let signedOut = false;

  // -- connection ----------------------------------------------------------------------------------------
  const setConn = (value, label) => {
    const badge = $("live-conn");
    badge.dataset.state = value;
    badge.textContent = label;
  };

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/ws/agent`);
    setConn("connecting", retry ? "Reconnecting…" : "Connecting…");
    socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "hello", observe: true })));
    socket.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (buffer && BUFFERED.has(frame.type)) buffer.push(frame);
      else handle(frame);
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      if (signedOut || event.code === 4401) {
        signedOut = true;
        setConn("off", "Signed out");
        $("live-summary").textContent = "Your session ended. Log in again to keep watching.";
        return;
      }
      setConn("connecting", "Reconnecting…");
      retry += 1;
      // Back off to 10 s at most: quick after a blip, gentle on a server that is restarting.
      window.setTimeout(connect, Math.min(10000, 500 * 2 ** Math.min(retry, 5)));
    });
  }

  async function loadSnapshot() {
    if (loading) {
      loadAgain = true;
      return;
    }
    loading = true;
    buffer = [];
    try {
      const response = await fetch("/supervisor/live.json", {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(`snapshot: ${response.status}`);
      const data = await response.json();
      state.conversations.clear();
      for (const summary of data.conversations) state.conversations.set(summary.id, summary);
    } catch (error) {
      console.warn("live board snapshot failed", error);
    } finally {
      const pending = buffer || [];
      buffer = null;
      for (const frame of pending) handle(frame);
      render();
      loading = false;
      if (loadAgain) {
        loadAgain = false;
        loadSnapshot();
      }
    }
  }

  function resyncSoon() {
    if (resyncTimer) return;
    resyncTimer = window.setTimeout(() => {
      resyncTimer = null;
      loadSnapshot();
    }, 200);
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
  }

  // -- frames --------------------------------------------------------------------------------------------
  function handle(frame) {
    switch (frame.type) {
      case "welcome":
        retry = 0;
        state.me = frame.agent;
        state.myStatus = frame.status;
        state.names.set(frame.agent.id, frame.agent.name);
        for (const colleague of frame.colleagues || []) state.names.set(colleague.id, colleague.name);
        for (const team of frame.teams || []) state.teams.set(team.id, team.name);
        setConn("live", "Live");
        loadSnapshot();
        if (state.watching) send({ type: "watch", conversation_id: state.watching });
        break;
      case "conversation":
      case "assigned":
        apply(frame.conversation);
        render();
        break;
      case "board":
        applyBoard(frame);
        render();
        break;
      case "status":
        state.myStatus = frame.status;
        if (state.me) state.agents.set(state.me.id, { status: frame.status, load: frame.load, capacity: frame.capacity });
        render();
        break;
      case "watching":
        if (frame.conversation.id === state.watching) {
          state.watched = frame.conversation;
          state.lines.clear();
          renderWatch();
        }
        break;
      case "message":
        if (frame.conversation_id === state.watching) {
          state.lines.set(frame.seq, frame);
          if (frame.author && frame.author.kind !== "system") showTyping(null);
          renderWatch();
        }
        break;
      case "typing":
        if (frame.conversation_id === state.watching) {
          showTyping(frame.on ? `${frame.name || (frame.by === "agent" ? "The agent" : "The visitor")} is typing…` : null);
        }
        break;
      case "closed":
        if (frame.conversation_id === state.watching && state.watched) {
          state.watched = { ...state.watched, status: "closed" };
          renderWatch();
        }
        break;
      case "ack":
        $("whisper-status").textContent = "Whispered to the agent.";
        break;
      case "error":
        if (frame.code === "session_ended") signedOut = true;
        else if (frame.code === "conflict" || frame.code === "invalid" || frame.code === "rate_limited") {
          $("whisper-status").textContent = frame.message || "That did not work.";
        }
        else if (frame.code === "forbidden" || frame.code === "not_found") {
          $("watch-sub").textContent = frame.message || "This chat cannot be opened.";
        }
        break;
      default:
        break;
    }
  }

  function apply(summary) {
    if (!summary || !summary.id) return;
    if (summary.agent) state.names.set(summary.agent.id, summary.agent.name);
    if (summary.status === "closed") {
      state.conversations.delete(summary.id);
      state.queue.delete(summary.id);
    } else {
      state.conversations.set(summary.id, summary);
      if (summary.status !== "queued") state.queue.delete(summary.id);
    }
    if (summary.id === state.watching) {
      state.watched = { ...(state.watched || {}), ...summary };
      renderWatch();
    }
  }

  function applyBoard(frame) {
    state.queue.clear();
    let unknown = false;
    for (const entry of frame.queue || []) {
      state.queue.set(entry.conversation_id, entry);
      const known = state.conversations.get(entry.conversation_id);
      if (!known) unknown = true;
      else if (known.status !== "queued") {
        // Moved back to the queue (a transfer to a team) without a conversation frame: trust the board.
        state.conversations.set(known.id, { ...known, status: "queued", agent: null });
      }
    }
    state.agents.clear();
    for (const agent of frame.agents || []) state.agents.set(agent.id, agent);
    if (unknown) resyncSoon();
  }

  // -- rendering -----------------------------------------------------------------------------------------
  function chatItem(summary) {
    const item = el("li", "sv-chat");
    item.dataset.conversationId = summary.id;
    const button = el("button", "sv-chat-button");
    button.type = "button";
    button.setAttribute("aria-pressed", String(summary.id === state.watching));
    if (summary.id === state.watching) item.classList.add("is-selected");

    const main = el("span", "sv-chat-main");
    main.append(el("span", "sv-chat-name", customerName(summary)));
    const detail = el("span", "sv-chat-detail");
    if (summary.status === "queued") {
      const place = state.queue.get(summary.id);
      const team = summary.team_id ? state.teams.get(summary.team_id) : null;
      detail.textContent = [
        place ? `#${place.position} in line` : "In line",
        team ? `for ${team}` : null,
        place ? place.wait_text : null,  // the visitor's own sentence (routing/wait_time.py)
      ].filter(Boolean).join(" · ");
    } else {
      detail.textContent = `with ${summary.agent ? summary.agent.name : "an agent"}`;
    }
    main.append(detail);
    if (summary.customer && summary.customer.current_title) {
      main.append(el("span", "sv-chat-page", `On “${summary.customer.current_title}”`));
    }

    const timer = el("span", "sv-chat-timer");
    const startedAt = summary.status === "queued" ? summary.created_at : summary.assigned_at || summary.created_at;
    timer.dataset.since = startedAt || "";
    timer.textContent = since(startedAt);
    timer.title = summary.status === "queued" ? "Waiting for" : "In conversation for";

    button.append(main, timer);
    button.addEventListener("click", () => watch(summary.id));
    item.append(button);
    return item;
  }

  function renderList(listId, emptyId, countId, summaries) {
    const list = $(listId);
    list.replaceChildren(...summaries.map(chatItem));
    $(emptyId).hidden = summaries.length > 0;
    $(countId).textContent = String(summaries.length);
  }

  function render() {
    const all = [...state.conversations.values()];
    const position = (s) => (state.queue.get(s.id) || { position: 1e9 }).position;
    const queued = all
      .filter((s) => s.status === "queued")
      .sort((a, b) => position(a) - position(b) || String(a.created_at).localeCompare(String(b.created_at)));
    const active = all
      .filter((s) => s.status === "active")
      .sort((a, b) => String(a.assigned_at || a.created_at).localeCompare(String(b.assigned_at || b.created_at)));
    renderList("queued-list", "queued-empty", "queued-count", queued);
    renderList("active-list", "active-empty", "active-count", active);

    const online = [...state.agents.values()].filter((a) => a.status !== "offline").length;
    const available = [...state.agents.values()].filter((a) => a.status === "available").length;
    $("live-summary").textContent =
      `${active.length} in conversation · ${queued.length} waiting · ` +
      `${online} agent${online === 1 ? "" : "s"} online, ${available} available`;
    renderAgents();
    renderStatus();
  }

  function renderAgents() {
    const list = $("live-agents");
    const rows = [...state.agents.entries()]
      .map(([id, agent]) => ({ id, ...agent, name: state.names.get(id) || "Agent" }))
      .sort((a, b) => (a.status === "offline") - (b.status === "offline") || a.name.localeCompare(b.name));
    list.replaceChildren(
      ...rows.map((agent) => {
        const item = el("li", `sv-agent sv-agent--${agent.status}`);
        item.dataset.agentId = agent.id;
        item.append(el("span", "sv-dot"), el("span", "sv-agent-name", agent.name));
        const load = el("span", "sv-agent-load", `${agent.load}/${agent.capacity}`);
        load.title = `${agent.load} of ${agent.capacity} chats`;
        item.append(load, el("span", "sv-agent-status", agent.status));
        return item;
      }),
    );
    if (!rows.length) list.append(el("li", "sv-muted", "No agents have been online since the server started."));
  }

  function renderStatus() {
    // Observing: the live view never makes its supervisor available for chats.
  }

  // -- whisper and take-over -------------------------------------------------------------------------------
  let whisperCount = 0;
  // The script is deferred: the page is parsed by now.
  (() => {
    const form = $("whisper-form");
    if (!form) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const body = $("whisper-body").value.trim();
      if (!body || !state.watching) return;
      whisperCount += 1;
      send({ type: "whisper", conversation_id: state.watching, body, client_id: `w-${Date.now()}-${whisperCount}` });
      $("whisper-body").value = "";
      $("whisper-status").textContent = "Sending…";
    });
    $("take-over").addEventListener("click", () => {
      if (!state.watching) return;
      send({ type: "takeover", conversation_id: state.watching });
      $("whisper-status").textContent = "Taking over: the chat opens in your inbox.";
    });
  })();

  // -- watching ------------------------------------------------------------------------------------------
  function watch(conversationId) {
    if (state.watching === conversationId) return;
    const previous = state.watching;
    if (previous && !(state.me && state.conversations.get(previous)?.agent?.id === state.me.id)) {
      send({ type: "watch", conversation_id: previous, on: false });
    }
    state.watching = conversationId;
    state.watched = state.conversations.get(conversationId) || null;
    state.lines.clear();
    showTyping(null);
    send({ type: "watch", conversation_id: conversationId });
    renderWatch();
    render();
  }

  function showTyping(text) {
    const line = $("watch-typing");
    window.clearTimeout(typingTimer);
    line.hidden = !text;
    line.textContent = text || "";
    // A lost "stopped typing" frame must not leave the indicator on forever.
    if (text) typingTimer = window.setTimeout(() => showTyping(null), 8000);
  }

  function lineItem(frame) {
    const kind = (frame.author && frame.author.kind) || "system";
    const item = el("li", `sv-line sv-line--${kind}${frame.private ? " sv-line--private" : ""}`);
    item.dataset.seq = String(frame.seq);
    const time = el("time", null, clock(frame.sent_at));
    if (frame.sent_at) time.dateTime = frame.sent_at;
    if (kind === "system") {
      const text = el("span", "sv-system-text");
      if (frame.private) text.append(el("span", "sv-tag sv-tag--private", "Private"), " ");
      text.append(frame.body);
      item.append(text, time);
      return item;
    }
    const meta = el("div", "sv-line-meta");
    meta.append(el("span", "sv-author", frame.author.name || (kind === "visitor" ? "Visitor" : "Agent")));
    meta.append(el("span", "sv-role", kind === "visitor" ? "Visitor" : "Agent"));
    if (frame.visibility === "whisper") meta.append(el("span", "sv-tag sv-tag--private", "Whisper"));
    else if (frame.private) meta.append(el("span", "sv-tag sv-tag--private", "Private note"));
    meta.append(time);
    item.append(meta, el("div", "sv-body", frame.body));
    return item;
  }

  function renderWatch() {
    const panel = $("watch-panel");
    $("watch-empty").hidden = Boolean(state.watching);
    panel.hidden = !state.watching;
    if (!state.watching) return;
    const summary = state.watched || state.conversations.get(state.watching) || { id: state.watching };
    $("watch-title").textContent = `Chat with ${customerName(summary)}`;
    const parts = [];
    if (summary.status) parts.push(summary.status === "queued" ? "Waiting" : summary.status === "active" ? "In conversation" : "Closed");
    if (summary.agent) parts.push(`with ${summary.agent.name}`);
    if (summary.created_at) parts.push(`started ${clock(summary.created_at)}`);
    $("watch-sub").textContent = parts.join(" · ");
    $("watch-transcript").href = `/supervisor/conversations/${encodeURIComponent(state.watching)}`;
    const list = $("watch-lines");
    const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const frames = [...state.lines.values()].sort((a, b) => a.seq - b.seq);
    list.replaceChildren(...frames.map(lineItem));
    if (stick) list.scrollTop = list.scrollHeight;
  }

  // Waiting and conversation times tick on screen; state itself only changes through frames.
  window.setInterval(() => {
    for (const timer of document.querySelectorAll("[data-since]")) timer.textContent = since(timer.dataset.since);
  }, 1000);

  connect();
})();
