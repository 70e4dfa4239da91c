/* Live notices: one EventSource per page on GET /api/v1/live, shared by every part of the page that
   wants to hear when a session changes (places taken or freed, a session opened, stopped, replaced).

   App.live(topics, onNotice) -> { update(topics), close() }
     topics    { department: id | [ids], hospital: id | [ids], session: id | [ids] } (any of them)
     onNotice  called with { id, type, session_id, department_id, hospital_id, date } for each notice
               that concerns `topics` (a hospital-wide notice, such as HolidayDeclared, has no
               session_id and comes to every subscriber of that hospital or of a department the
               caller saw of it), and with { type: "resync" } when notices may have been missed
               (a gap too long for the server to replay, a lost feed, a manual reconnect): re-read
               everything shown.
   A notice names what changed, never who or how many: re-read the data through the API.

   The clerk's day list, for example:
     const sub = App.live({ session: sessionIds }, (n) => { if (n.type === "resync" || sessionIds.includes(n.session_id)) reloadList(); });
     sub.update({ session: newIds });   // after the list changed

   App.live.debounced(fn, first, spacing): fn at most once per `spacing` ms, the first call after
   `first` ms, each with jitter, so that a crowd of pages does not re-read all at once.

   The browser reconnects by itself and sends Last-Event-ID; the server replays what the page
   missed. When the server refused (503: too many streams; or a broken answer) EventSource gives
   up: then we open a new one after a pause, passing the last id as ?last_event_id=. */
(function () {
  "use strict";
  const TYPES = ["AppointmentBooked", "AppointmentCancelled", "AppointmentMoved", "AppointmentCheckedIn",
    "AppointmentLapsed", "AppointmentRefunded", "SessionStopApplied", "SessionScheduled", "SessionQuotaChanged",
    "DoctorStopApproved", "HolidayDeclared", "resync"];
  const KINDS = ["session", "department", "hospital"];
  const subscribers = new Set();
  let source = null;
  let url = "";
  let lastId = "";
  let retryTimer = null;
  let reopenTimer = null;
  let failures = 0;
  const hospitalOf = {};  // department -> hospital, learnt from notices, for hospital-wide ones

  function asSet(value) {
    if (value === null || value === undefined || value === "") return new Set();
    return new Set((Array.isArray(value) ? value : [value]).map(String).filter(Boolean));
  }
  function normal(topics) {
    const t = topics || {};
    return { session: asSet(t.session), department: asSet(t.department), hospital: asSet(t.hospital) };
  }

  function concerns(topics, n) {
    if (n.type === "resync") return true;
    if (topics.session.has(n.session_id) || topics.department.has(n.department_id) || topics.hospital.has(n.hospital_id)) return true;
    if (!n.session_id && !n.department_id && n.hospital_id) {
      return Array.from(topics.department).some((d) => hospitalOf[d] === n.hospital_id);
    }
    return false;
  }

  function wantedUrl() {
    const params = new URLSearchParams();
    const all = { session: new Set(), department: new Set(), hospital: new Set() };
    subscribers.forEach((s) => KINDS.forEach((k) => s.topics[k].forEach((v) => all[k].add(v))));
    KINDS.forEach((k) => Array.from(all[k]).sort().forEach((v) => params.append(k, v)));
    const query = params.toString();
    return query ? "/api/v1/live?" + query : "";
  }

  function dispatch(event) {
    if (event.lastEventId) lastId = event.lastEventId;
    let n;
    try { n = JSON.parse(event.data || "{}"); } catch (e) { return; }
    n.type = n.type || event.type;
    n.id = event.lastEventId || null;
    if (n.department_id && n.hospital_id) hospitalOf[n.department_id] = n.hospital_id;
    subscribers.forEach((s) => {
      if (concerns(s.topics, n)) {
        try { s.onNotice(n); } catch (e) { setTimeout(() => { throw e; }); }
      }
    });
  }

  /* <body data-live="open|connecting|closed">: the stream's state, for people and tests to see. */
  function mark(state) { if (document.body) document.body.dataset.live = state; }

  function open(resuming) {
    clearTimeout(retryTimer);
    if (source) { source.close(); source = null; }
    url = wantedUrl();
    if (!url || typeof EventSource === "undefined") return;
    // A new EventSource cannot send Last-Event-ID itself: carry it in the query.
    const es = new EventSource(lastId ? url + "&last_event_id=" + encodeURIComponent(lastId) : url);
    source = es;
    TYPES.forEach((type) => es.addEventListener(type, dispatch));
    mark("connecting");
    es.addEventListener("open", () => {
      failures = 0;
      mark("open");
      // Reopened without an id to resume from: whatever happened meanwhile is unknown.
      if (resuming && !lastId) dispatch({ type: "resync", data: '{"type":"resync"}', lastEventId: "" });
    });
    es.addEventListener("message", (e) => { if (e.lastEventId) lastId = e.lastEventId; });
    es.addEventListener("error", () => {
      if (source !== es) return;
      mark(es.readyState === EventSource.CLOSED ? "closed" : "connecting");
      if (es.readyState !== EventSource.CLOSED) return; // CONNECTING: the browser retries by itself
      failures += 1;
      const pause = Math.min(30000, 2000 * 2 ** Math.min(failures, 4)) * (0.5 + Math.random());
      retryTimer = setTimeout(() => open(true), pause);
    });
  }

  /* Subscriptions change in bursts (a page draws, then subscribes): reopen once, keeping the last id. */
  function reopenSoon() {
    clearTimeout(reopenTimer);
    reopenTimer = setTimeout(() => { if (wantedUrl() !== url) open(Boolean(url)); }, 50);
  }

  function live(topics, onNotice) {
    const sub = { topics: normal(topics), onNotice: onNotice };
    subscribers.add(sub);
    reopenSoon();
    return {
      update(next) { sub.topics = normal(next); reopenSoon(); },
      close() { subscribers.delete(sub); reopenSoon(); },
    };
  }

  live.debounced = function (fn, first, spacing) {
    const wait = first === undefined ? 250 : first;
    const gap = spacing === undefined ? 1500 : spacing;
    let timer = null;
    let lastRun = 0;
    return function () {
      if (timer) return;
      const jitter = Math.random() * wait;
      const delay = Math.max(wait + jitter, lastRun + gap * (1 + Math.random() * 0.5) - Date.now());
      timer = setTimeout(() => { timer = null; lastRun = Date.now(); fn(); }, delay);
    };
  };

  window.addEventListener("pagehide", () => { if (source) source.close(); });
  window.App = Object.assign(window.App || {}, { live: live });
})();
