/* The success page: booking code, visit number (就诊序号), arrival window, what to do next. */
(function () {
  "use strict";
  const { t, el, get, requireRole, facts, money, whenText, titleText, loaded, errorText } = window.App;
  const box = document.getElementById("booked");
  const id = box.dataset.appointmentId;

  function show(a, s, hospital, department) {
    const tick = el("div", { class: "success-icon", "aria-hidden": "true" });
    tick.innerHTML = '<svg viewBox="0 0 24 24"><path fill="currentColor" d="M9 16.2 4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4z"/></svg>'; // constant markup
    const dl = el("dl", { class: "facts" });
    facts(dl, [
      [t("confirm.hospital"), hospital],
      [t("confirm.department"), department],
      [t("confirm.doctor"), s && s.doctor ? s.doctor.name + " · " + titleText(s.doctor.title) : ""],
      [t("confirm.time"), s ? whenText(s) : (a.date || "")],
      [t("confirm.fee"), s ? money(s.fee) : (a.fee ? money(a.fee) : ""), "fee"],
    ]);
    const seqs = el("div", { class: "seq-row" },
      el("div", { class: "seq", id: "sequence-number" }, el("b", null, String(a.sequence_number)), el("span", null, t("booked.seq"))),
      a.arrival_window ? el("div", { class: "seq seq-soft", id: "arrival-window" }, el("b", null, a.arrival_window), el("span", null, t("booked.arrival_label"))) : null);
    box.replaceChildren(tick,
      el("h1", { class: "success-title" }, t("booked.title")),
      el("p", { class: "muted" }, t("booked.sms")),
      el("div", { class: "code-box" }, el("div", { class: "code-label" }, t("booked.code")),
        el("div", { class: "code", id: "booking-code", "data-code": a.code }, a.code)),
      seqs, dl,
      el("p", { class: "note" }, t("booked.next")),
      el("div", { class: "actions" },
        el("a", { class: "btn btn-primary", href: "/me", id: "to-mine" }, t("booked.mine")),
        el("a", { class: "btn btn-ghost", href: "/" }, t("booked.more"))));
  }

  async function main() {
    await requireRole(["patient"]);
    const kept = sessionStorage.getItem("booked:" + id);
    if (kept) {
      const k = JSON.parse(kept);
      show(k.answer, k.session, k.hospital, k.department);
      return;
    }
    // Opened later (not straight after booking): the booking from the API, with names looked up.
    const answer = await get("/api/v1/appointments");
    const found = (answer.appointments || []).find((x) => x.appointment_id === id);
    if (!found) { box.replaceChildren(el("p", { class: "empty" }, t("booked.notfound"))); return; }
    const [a] = await window.Bookings.enrich([found]);
    show(a, a.session, a.hospital_name, a.department_name);
  }
  main().catch((err) => box.replaceChildren(el("p", { class: "form-error" }, errorText(err)))).finally(() => loaded(box));
})();
