/* The operator page (platform_admin): every service's health, the relay and each projection's lag,
   the HIS and SMS backlogs, the dead-letter queues with their first messages and a requeue button,
   and this gateway's answers by status. Everything comes from /api/v1/ops/* (the same facts as
   /healthz); a parked message is shown by type, event id and masked error only. */
(function () {
  "use strict";
  const { t, el, $, get, post, requireRole, staffHello, showError, hideError, toast, facts } = window.App;
  const enc = encodeURIComponent;

  function badge(status) {
    const cls = status === "ok" ? "badge badge-ok" : status === "down" ? "badge badge-danger" : "badge badge-warn";
    return el("span", { class: cls, "data-status": status }, t("ops.status." + status));
  }
  function num(n) { return n === null || n === undefined ? "–" : String(Math.round(Number(n) * 10) / 10); }
  function empty(cols) { return el("tr", null, el("td", { colspan: cols, class: "muted center" }, t("common.none"))); }
  function outcomes(counts) {
    const keys = Object.keys(counts || {}).sort();
    return keys.length ? keys.map((k) => t("ops.outcome." + k) + " " + num(counts[k])).join(" · ") : "–";
  }

  function drawHealth(h) {
    const box = $("#ops-status");
    const head = el("div", { class: h.status === "ok" ? "banner banner-ok" : "banner banner-danger", id: "ops-overall",
      "data-status": h.status }, el("strong", null, t("ops.overall." + (h.status === "ok" ? "ok" : "degraded"))));
    if (h.reasons && h.reasons.length) head.append(el("ul", { id: "ops-reasons" }, h.reasons.map((r) => el("li", null, r))));
    box.replaceChildren(head);

    const rows = Object.keys(h.services).sort().map((name) => {
      const d = h.details[name] || {};
      const checks = d.checks || {};
      const bad = Object.keys(checks).filter((c) => checks[c].status !== "ok");
      return el("tr", { "data-service": name }, el("td", null, name), el("td", null, badge(h.services[name])),
        el("td", { class: "cell-wrap" }, bad.length ? bad.join(", ") : t("ops.checks.ok", { n: Object.keys(checks).length })),
        el("td", null, outcomes((d.counters || {}).events)), el("td", null, outcomes((d.counters || {}).rpc)),
        el("td", null, d.metrics_address ? el("code", null, d.metrics_address) : "–"));
    });
    $("#ops-services tbody").replaceChildren(...rows);

    const r = h.relay || {};
    facts($("#ops-relay"), [[t("ops.relay"), badge(r.status || "degraded")], [t("ops.relay.behind"), num(r.behind)],
      [t("ops.seconds_behind"), num(r.seconds_behind)], [t("ops.relay.lock"), r.lock_held ? t("ops.yes") : t("ops.no")],
      [t("ops.reason"), r.reason || ""]]);
    const projections = Object.keys(h.projections || {}).sort().map((name) => {
      const p = h.projections[name];
      return el("tr", { "data-projection": name }, el("td", null, name), el("td", null, badge(p.status)),
        el("td", { class: "num" }, num(p.pending)), el("td", { class: "num" }, num(p.seconds_behind)));
    });
    $("#ops-projections tbody").replaceChildren(...(projections.length ? projections : [empty(4)]));

    const sms = (h.backlogs || {}).sms || {};
    facts($("#ops-sms"), [[t("ops.sms"), badge(sms.status || "degraded")], [t("ops.waiting"), num(sms.waiting)],
      [t("ops.parked"), num(sms.parked)], [t("ops.oldest"), num(sms.oldest_waiting_s)], [t("ops.reason"), sms.reason || ""]]);
    const his = ((h.backlogs || {}).his || {}).hospitals || {};
    const hisRows = Object.keys(his).sort().map((id) => {
      const x = his[id];
      return el("tr", { "data-hospital": id }, el("td", null, id), el("td", { class: "num" }, num(x.waiting)),
        el("td", { class: "num" }, num(x.parked)), el("td", { class: "num" }, num(x.oldest_waiting_s)),
        el("td", null, x.circuit === "open" || x.failures ? badge("degraded") : badge("ok")));
    });
    $("#ops-his tbody").replaceChildren(...(hisRows.length ? hisRows : [empty(5)]));

    const req = h.gateway_requests || {};
    const byStatus = req.by_status || {};
    facts($("#ops-requests"), Object.keys(byStatus).sort().map((k) => [k, num(byStatus[k])])
      .concat((req.top_routes || []).slice(0, 5).map((x) => [x.route, num(x.count)])));
  }

  function drawDead(answer) {
    const rows = answer.queues.map((q) => el("tr", { "data-queue": q.queue },
      el("td", { class: "cell-wrap" }, el("code", null, q.queue)), el("td", null, q.service),
      el("td", { class: "num dead-count" }, String(q.count)),
      el("td", { class: "cell-wrap" }, el("ul", { class: "dead-messages" }, q.messages.map((m) =>
        el("li", null, el("strong", null, m.type), " ", el("code", null, m.event_id), el("br"), el("span", { class: "muted small" }, m.error))))),
      el("td", null, el("button", { class: "btn btn-primary requeue", type: "button", onclick: () => requeue(q.queue) },
        t("ops.requeue")))));
    $("#ops-dead tbody").replaceChildren(...(rows.length ? rows : [empty(5)]));
  }

  async function requeue(queue) {
    if (!window.confirm(t("ops.requeue.confirm", { queue: queue }))) return;
    try {
      const answer = await post("/api/v1/ops/dead-letters/" + enc(queue) + "/requeue");
      toast(t("ops.requeued", { n: answer.moved }));
      await refresh();
    } catch (err) { showError($("#ops-error"), err); }
  }

  async function refresh() {
    hideError($("#ops-error"));
    try {
      const [health, dead] = await Promise.all([get("/api/v1/ops/health"), get("/api/v1/ops/dead-letters")]);
      drawHealth(health);
      drawDead(dead);
      document.body.dataset.loaded = "1";
    } catch (err) { showError($("#ops-error"), err); }
  }

  requireRole(["platform_admin"]).then(async (me) => {
    staffHello(me);
    $("#ops-refresh").addEventListener("click", refresh);
    await refresh();
    setInterval(() => { if (!document.hidden) refresh(); }, 15000);
  });
})();
