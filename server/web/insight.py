"""Supervisor insight pages: reports, who gave up waiting, ratings, repeated questions; CSV of every table.

Thin: parse the query, make one call to `nameplate.insight`, render. Everything is scoped to the signed-in
supervisor's site by the services.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from nameplate.desk.canned import CannedResponses
from nameplate.desk.transcripts import csv_safe, csv_text, format_duration, format_time, utc_iso
from nameplate.errors import NameplateError, NotFound
from nameplate.insight.charts import bar_chart
from nameplate.insight.metrics import METRICS, QUICK_ABANDON_SECONDS
from nameplate.insight.reports import ConversationLine, Period, Row, parse_period
from nameplate.protocol.vocabulary import STAFF_ROLES, ErrorCode
from nameplate.store.models import utcnow
from nameplate.web.pages import check_csrf, render, require_agent, services_of
from nameplate.web.supervisor import attachment, page

FIGURE_COLUMNS = (
    "key", "label", "chats", "served", "wait_median_s", "wait_p90_s", "first_response_median_s",
    "first_response_p90_s", "handle_median_s", "handle_p90_s", "abandoned", "abandoned_under_10s", "missed",
    "closed", "ratings", "csat", "response_rate",
)  # fmt: skip
LINE_COLUMNS = (
    "conversation_id", "started_at", "customer", "email", "agent", "wait_s", "first_response_s", "handle_s",
    "abandoned", "abandon_wait_s", "page", "score", "comment",
)  # fmt: skip
TABLES = ("days", "agents", "teams")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")


def figure_record(row: Row) -> list[str]:
    f = row.figures
    return [
        row.key, csv_safe(row.label), str(f.chats), str(f.served), _number(f.wait.median), _number(f.wait.p90),
        _number(f.first_response.median), _number(f.first_response.p90), _number(f.handle.median),
        _number(f.handle.p90), str(f.abandoned), str(f.quick_abandoned), str(f.missed), str(f.closed),
        str(f.ratings), _number(f.csat), _number(f.response_rate),
    ]  # fmt: skip


def line_record(line: ConversationLine) -> list[str]:
    f = line.facts
    return [
        f.conversation_id, utc_iso(f.started_at) or "", csv_safe(line.customer_name), csv_safe(line.email or ""),
        csv_safe(line.agent_name or ""), _number(f.wait_s), _number(f.first_response_s), _number(f.handle_s),
        "true" if f.abandoned else "false", _number(f.abandon_wait_s), csv_safe(f.page or ""),
        "" if f.score is None else str(f.score), csv_safe(line.comment or ""),
    ]  # fmt: skip


def csv_response(filename: str, header: Iterable[str], records: Iterable[list[str]]) -> Response:
    return Response(
        csv_text([list(header), *records]), media_type="text/csv; charset=utf-8", headers=attachment(filename)
    )


def period_of(request: Request) -> Period:
    params = request.query_params
    return parse_period(params.get("from"), params.get("to"), params.get("tz"), utcnow())


def period_params(period: Period) -> dict[str, str]:
    return {"from": period.first.isoformat(), "to": period.last.isoformat(), "tz": period.zone.key}


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f} %"


def duration(value: float | None) -> str:
    return format_duration(value) if value is not None else "—"


def view_helpers(period: Period) -> dict[str, Any]:
    def link(path: str, **extra: Any) -> str:
        query = {**period_params(period), **{k: v for k, v in extra.items() if v not in (None, "")}}
        return f"{path}?{urlencode(query)}"

    def local_time(moment: Any) -> str:
        return moment.astimezone(period.zone).strftime("%Y-%m-%d %H:%M") if moment is not None else ""

    return {
        "percent": percent,
        "duration": duration,
        "link": link,
        "local_time": local_time,
        "format_time": format_time,
        "utc_iso": utc_iso,
        "period": period,
        "quick_seconds": int(QUICK_ABANDON_SECONDS),
    }


def day_charts(days: list[Row]) -> list[dict[str, Any]]:
    """The per-day charts; each is shown with a table of the same numbers."""
    labels = [row.label for row in days]

    def chart(chart_id: str, title: str, values: list[float | None], show: Any, unit: str) -> dict[str, Any]:
        present = [(label, v) for label, v in zip(labels, values, strict=True) if v is not None]
        peak = max(present, key=lambda pair: pair[1]) if present else None
        description = f"{title} for each day from {labels[0]} to {labels[-1]}." + (
            f" Highest: {show(peak[1])} on {peak[0]}." if peak else " No data in this period."
        )
        return {
            "id": chart_id,
            "title": title,
            "unit": unit,
            "svg": bar_chart(chart_id, title, description, labels, values, show),
            "rows": [(label, show(v) if v is not None else "—") for label, v in zip(labels, values, strict=True)],
        }

    def count(v: float) -> str:
        return f"{v:.0f}"

    return [
        chart("chart-chats", "Chats per day", [float(r.figures.chats) for r in days], count, "chats"),
        chart("chart-wait", "Median queue wait per day", [r.figures.wait.median for r in days], duration, "wait"),
        chart(
            "chart-first-response",
            "Median first response per day",
            [r.figures.first_response.median for r in days],
            duration,
            "first response",
        ),
        chart(
            "chart-abandoned",
            "Visitors who gave up per day",
            [float(r.figures.abandoned) for r in days],
            count,
            "gave up",
        ),
    ]


async def _viewer_and_period(request: Request) -> tuple[Any, Period]:
    viewer = await require_agent(request, *STAFF_ROLES)
    return viewer, period_of(request)


# -- reports ---------------------------------------------------------------------------------------------
@page
async def reports_page(request: Request) -> Response:
    viewer, period = await _viewer_and_period(request)
    report = await services_of(request).insight.reports.report(viewer.site_id, period)
    return render(
        request,
        "supervisor_reports.html",
        agent=viewer,
        report=report,
        charts=day_charts(report.days),
        tables=[
            ("days", "By day", report.days),
            ("agents", "By agent", report.agents),
            ("teams", "By team", report.teams),
        ],
        **view_helpers(period),
    )


@page
async def reports_csv(request: Request) -> Response:
    table = request.path_params["table"]
    if table not in TABLES:
        raise NotFound("report tables are days, agents and teams")
    viewer, period = await _viewer_and_period(request)
    report = await services_of(request).insight.reports.report(viewer.site_id, period)
    rows: list[Row] = getattr(report, table)
    name = f"nameplate-report-{table}-{period.first.isoformat()}-to-{period.last.isoformat()}.csv"
    return csv_response(name, FIGURE_COLUMNS, (figure_record(row) for row in rows))


def _drill_filters(request: Request) -> dict[str, Any]:
    params = request.query_params
    metric = params.get("metric") or "chats"
    if metric not in METRICS:
        raise NameplateError(ErrorCode.invalid, f"metric must be one of {', '.join(METRICS)}")
    day_text = (params.get("day") or "").strip()
    try:
        day = date.fromisoformat(day_text) if day_text else None
    except ValueError as exc:
        raise NameplateError(ErrorCode.invalid, "day must be a date like 2024-05-31") from exc
    return {
        "metric": metric,
        "day": day,
        "agent_id": params.get("agent") or None,
        "team_id": params.get("team") or None,
    }


@page
async def drill_page(request: Request) -> Response:
    viewer, period = await _viewer_and_period(request)
    filters = _drill_filters(request)
    lines = await services_of(request).insight.reports.behind(viewer.site_id, period, **filters)
    names = {a.id: a.full_name for a in await services_of(request).directory.agents(viewer.site_id)}
    teams = await services_of(request).insight.reports.team_names(viewer.site_id)
    return render(
        request,
        "supervisor_report_conversations.html",
        agent=viewer,
        lines=lines,
        filters=filters,
        agent_name=names.get(filters["agent_id"] or ""),
        team_name=teams.get(filters["team_id"] or ""),
        csv_query=urlencode(
            {
                **period_params(period),
                **{k: v for k, v in request.query_params.items() if k in ("metric", "day", "agent", "team")},
            }
        ),
        **view_helpers(period),
    )


@page
async def drill_csv(request: Request) -> Response:
    viewer, period = await _viewer_and_period(request)
    lines = await services_of(request).insight.reports.behind(viewer.site_id, period, **_drill_filters(request))
    return csv_response("nameplate-report-conversations.csv", LINE_COLUMNS, (line_record(x) for x in lines))


# -- who gave up -----------------------------------------------------------------------------------------
@page
async def gave_up_page(request: Request) -> Response:
    viewer, period = await _viewer_and_period(request)
    services = services_of(request)
    lines = await services.insight.reports.gave_up(viewer.site_id, period)
    return render(
        request,
        "supervisor_gave_up.html",
        agent=viewer,
        lines=lines,
        colleagues=[a for a in await services.directory.agents(viewer.site_id) if a.active],
        sent=request.query_params.get("sent"),
        **view_helpers(period),
    )


@page
async def gave_up_csv(request: Request) -> Response:
    viewer, period = await _viewer_and_period(request)
    lines = await services_of(request).insight.reports.gave_up(viewer.site_id, period)
    return csv_response("nameplate-gave-up.csv", LINE_COLUMNS, (line_record(x) for x in lines))


async def follow_up(request: Request) -> Response:
    """POST: one click sends the apology; a form post comes back to the list, a script gets JSON."""
    viewer = await require_agent(request, *STAFF_ROLES)
    await check_csrf(request)
    form = await request.form()
    sender = str(form.get("sender") or "") or None
    conversation_id = request.path_params["conversation_id"]
    mail = await services_of(request).insight.follow_ups.send(viewer, conversation_id, sender)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"sent": True, "to": mail.to, "from": mail.from_name})
    back = str(form.get("back") or "/supervisor/gave-up")
    if not back.startswith("/supervisor/gave-up"):
        back = "/supervisor/gave-up"
    return RedirectResponse(
        back + ("&" if "?" in back else "?") + urlencode({"sent": conversation_id}), status_code=303
    )


# -- ratings ---------------------------------------------------------------------------------------------
def _rating_filters(request: Request) -> dict[str, Any]:
    params = request.query_params
    score_text = (params.get("score") or "").strip()
    if score_text and score_text not in {"1", "2", "3", "4", "5"}:
        raise NameplateError(ErrorCode.invalid, "score must be 1 to 5")
    return {
        "score": int(score_text) if score_text else None,
        "agent_id": params.get("agent") or None,
        "team_id": params.get("team") or None,
    }


@page
async def ratings_page(request: Request) -> Response:
    viewer, period = await _viewer_and_period(request)
    services = services_of(request)
    filters = _rating_filters(request)
    lines = await services.insight.reports.ratings(viewer.site_id, period, **filters)
    return render(
        request,
        "supervisor_ratings.html",
        agent=viewer,
        lines=lines,
        filters=filters,
        agents=await services.directory.agents(viewer.site_id),
        teams=await services.directory.teams(viewer.site_id),
        **view_helpers(period),
    )


@page
async def ratings_csv(request: Request) -> Response:
    viewer, period = await _viewer_and_period(request)
    lines = await services_of(request).insight.reports.ratings(viewer.site_id, period, **_rating_filters(request))
    return csv_response("nameplate-ratings.csv", LINE_COLUMNS, (line_record(x) for x in lines))


# -- repeated questions ----------------------------------------------------------------------------------
@page
async def questions_page(request: Request) -> Response:
    viewer, period = await _viewer_and_period(request)
    topics = await services_of(request).insight.reports.topics(viewer.site_id, period)
    return render(
        request,
        "supervisor_questions.html",
        agent=viewer,
        topics=topics,
        created=request.query_params.get("created"),
        **view_helpers(period),
    )


@page
async def questions_csv(request: Request) -> Response:
    viewer, period = await _viewer_and_period(request)
    topics = await services_of(request).insight.reports.topics(viewer.site_id, period)
    records = [
        [
            csv_safe(t.representative),
            str(t.count),
            str(t.previous_count),
            str(t.trend),
            " ".join(e.conversation_id for e in t.examples),
        ]
        for t in topics
    ]
    return csv_response(
        "nameplate-repeated-questions.csv", ("question", "count", "previous_count", "trend", "examples"), records
    )


@page
async def canned_from_question(request: Request) -> Response:
    viewer = await require_agent(request, *STAFF_ROLES)
    await check_csrf(request)
    form = await request.form()
    await CannedResponses(services_of(request).sessions).create(
        viewer.site_id, str(form.get("shortcut") or ""), str(form.get("body") or "")
    )
    back = str(form.get("back") or "/supervisor/questions")
    if not back.startswith("/supervisor/questions"):
        back = "/supervisor/questions"
    shortcut = str(form.get("shortcut") or "").strip().removeprefix("/").lower()
    return RedirectResponse(back + ("&" if "?" in back else "?") + urlencode({"created": shortcut}), status_code=303)


routes: list[BaseRoute] = [
    Route("/supervisor/reports", reports_page),
    Route("/supervisor/reports/conversations", drill_page),
    Route("/supervisor/reports/conversations.csv", drill_csv),
    Route("/supervisor/reports/{table}.csv", reports_csv),
    Route("/supervisor/gave-up", gave_up_page),
    Route("/supervisor/gave-up.csv", gave_up_csv),
    Route("/supervisor/gave-up/{conversation_id}/follow-up", follow_up, methods=["POST"]),
    Route("/supervisor/ratings", ratings_page),
    Route("/supervisor/ratings.csv", ratings_csv),
    Route("/supervisor/questions", questions_page),
    Route("/supervisor/questions.csv", questions_csv),
    Route("/supervisor/questions/canned", canned_from_question, methods=["POST"]),
]
