/* The day's list (当日名单) as the window and the doctors print it: rows grouped by department and
   doctor, one table per doctor and period, the patient masked as the API gives them.
   Exposed as window.DayList; clerk.js and doctor.js draw with it. */
(function () {
  "use strict";
  const { t, el, hm, money, periodText, longDay, LANG } = window.App;
  const PERIODS = ["morning", "afternoon", "evening"];

  /* The API's label (待取号 / 已取号 / 已退号 / 已取消 / 爽约) is the hospital's word; English pages translate it. */
  function labelText(row) {
    const key = "label." + (row.label || "");
    const known = row.label && t(key) !== key;
    if (LANG === "zh") return row.label || t("status." + row.status);
    return known ? t(key) : t("status." + row.status);
  }
  function label(row) {
    return el("span", { class: "lbl st-" + (row.status || ""), "data-status": row.status || "" }, labelText(row));
  }

  function byVisit(a, b) {
    const pa = PERIODS.indexOf(a.period), pb = PERIODS.indexOf(b.period);
    if (pa !== pb) return pa - pb;
    if ((a.start || "") !== (b.start || "")) return (a.start || "") < (b.start || "") ? -1 : 1;
    return (a.sequence_number || 0) - (b.sequence_number || 0);
  }

  /* [{department_id, department_name, doctors: [{doctor_id, doctor_name, sessions: [{session_id, period, start, rows}]}]}] */
  function groups(rows) {
    const depts = new Map();
    rows.slice().sort(byVisit).forEach((r) => {
      const dk = r.department_id || r.department_name || "";
      if (!depts.has(dk)) depts.set(dk, { department_id: r.department_id, department_name: r.department_name || "", doctors: new Map() });
      const docs = depts.get(dk).doctors;
      const ok = r.doctor_id || r.doctor_name || "";
      if (!docs.has(ok)) docs.set(ok, { doctor_id: r.doctor_id, doctor_name: r.doctor_name || "", sessions: new Map() });
      const sessions = docs.get(ok).sessions;
      const sk = r.session_id || r.period;
      if (!sessions.has(sk)) sessions.set(sk, { session_id: r.session_id, period: r.period, start: r.start, rows: [] });
      sessions.get(sk).rows.push(r);
    });
    const names = (a, b) => String(a).localeCompare(String(b), "zh-CN");
    return Array.from(depts.values()).sort((a, b) => names(a.department_name, b.department_name)).map((d) => ({
      department_id: d.department_id, department_name: d.department_name,
      doctors: Array.from(d.doctors.values()).sort((a, b) => names(a.doctor_name, b.doctor_name)).map((doc) => ({
        doctor_id: doc.doctor_id, doctor_name: doc.doctor_name,
        sessions: Array.from(doc.sessions.values()).sort(byVisit),
      })),
    }));
  }

  const COLUMNS = {
    seq: "daylist.seq", name: "daylist.name", id: "admin.lists.id", phone: "admin.lists.phone", channel: "admin.lists.channel",
    arrival: "booked.arrival_label", fee: "confirm.fee", code: "admin.lists.code", status: "admin.lists.status",
  };
  function cell(kind, r) {
    switch (kind) {
      case "seq": return el("td", { class: "seq-no" }, String(r.sequence_number ?? ""));
      case "name": return el("td", null, r.name_masked || "");
      case "id": return el("td", null, r.id_masked || "");
      case "phone": return el("td", null, r.phone_masked || "");
      case "channel": return el("td", null, r.channel ? t("channel." + r.channel) : "");
      case "arrival": return el("td", null, r.arrival_window || "");
      case "fee": return el("td", null, r.fee !== undefined && r.fee !== null ? money(r.fee) + (r.paid ? " " + t("daylist.paid") : "") : "");
      case "code": return el("td", { class: "code" }, r.code || "");
      case "status": return el("td", null, label(r));
      default: return el("td");
    }
  }

  /* One doctor's sheet: a heading (doctor, date, period) and a table per session. */
  function sheet(doctor, opts) {
    const columns = opts.columns || ["seq", "name", "id", "phone", "channel", "status"];
    const blocks = doctor.sessions.map((s) => {
      const live = s.rows.filter((r) => r.status !== "cancelled" && r.status !== "refunded").length;
      const rowActions = opts.actions;
      return el("section", { class: "doc-sheet" + (opts.pageBreaks ? " page" : ""), "data-doctor-id": doctor.doctor_id || "", "data-session-id": s.session_id || "" },
        el("h4", null, el("span", { class: "sheet-doctor" }, doctor.doctor_name), " · ",
          el("span", null, (opts.date ? longDay(opts.date) + " " : "") + periodText(s.period) + (s.start ? " " + hm(s.start) : "")),
          el("span", { class: "badge badge-brand" }, t("admin.lists.patients", { n: live }))),
        el("div", { class: "table-scroll" }, el("table", { class: "table table-reflow daylist-table" },
          el("thead", null, el("tr", null, columns.map((c) => el("th", null, t(COLUMNS[c]))), rowActions ? el("th", { class: "no-print" }) : null)),
          el("tbody", null, s.rows.map((r) => el("tr", { "data-code": r.code || "", "data-appointment-id": r.appointment_id || "", "data-status": r.status || "" },
            columns.map((c) => cell(c, r)),
            rowActions ? el("td", { class: "no-print" }, rowActions(r)) : null))))));
    });
    return blocks;
  }

  function summary(rows) {
    const counts = new Map();
    rows.forEach((r) => { const k = labelText(r); counts.set(k, (counts.get(k) || 0) + 1); });
    return el("div", { class: "daylist-summary" }, el("span", { class: "badge badge-brand" }, t("daylist.total", { n: rows.length })),
      Array.from(counts, ([k, n]) => el("span", { class: "badge" }, k + " " + n)));
  }

  /* The whole list into `box`: grouped by department (a heading each) unless opts.flat. */
  function render(box, rows, opts) {
    const o = opts || {};
    if (!rows.length) { box.replaceChildren(el("p", { class: "empty" }, o.empty || t("admin.lists.empty"))); return; }
    const parts = [summary(rows)];
    groups(rows).forEach((d) => {
      const sheets = d.doctors.flatMap((doc) => sheet(doc, o));
      parts.push(o.flat ? sheets : el("section", { class: "dept-block", "data-department-id": d.department_id || "" },
        el("h3", null, d.department_name), sheets));
    });
    box.replaceChildren(...parts.flat());
  }

  window.DayList = { groups, render, sheet, summary, label, labelText };
})();
