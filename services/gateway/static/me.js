/* My bookings: upcoming ones with cancel (until the cut-off), the history, a ban notice. */
(function () {
  "use strict";
  const { t, el, get, requireRole, loaded, errorText, toast, todayISO } = window.App;
  const { enrich, card, confirmCancel, ACTIVE } = window.Bookings;
  const upcoming = document.getElementById("upcoming");
  const past = document.getElementById("past");
  let bookings = [];

  async function cancel(a) {
    const answer = await confirmCancel(a);
    if (!answer) return;
    toast(t("me.cancel.done") + (answer.refund_due ? " · " + t("me.refund", { fee: answer.refund_due }) : ""));
    // The answer is the truth now; the list read model follows the event a moment later.
    bookings = bookings.map((b) => (b.appointment_id === a.appointment_id ? Object.assign({}, b, { status: answer.status || "cancelled" }) : b));
    render();
  }

  function render() {
    const today = todayISO();
    const active = bookings.filter((a) => ACTIVE.indexOf(a.status) >= 0 && a.date >= today);
    const rest = bookings.filter((a) => active.indexOf(a) < 0).reverse();
    upcoming.replaceChildren(...(active.length ? active.map((a) => card(a, { onCancel: cancel }))
      : [el("p", { class: "empty" }, t("me.empty"), " ", el("a", { href: "/" }, t("booked.more")))]));
    past.replaceChildren(...(rest.length ? rest.map((a) => card(a)) : [el("p", { class: "empty" }, t("common.none"))]));
  }

  async function load() {
    const answer = await get("/api/v1/appointments");
    const ban = document.getElementById("ban");
    if (answer.banned_until) {
      document.getElementById("ban-text").textContent = t("me.banned", { date: String(answer.banned_until).slice(0, 10) });
      ban.hidden = false;
    } else ban.hidden = true;
    bookings = await enrich(answer.appointments || []);
    render();
  }

  requireRole(["patient"]).then((me) => {
    document.getElementById("me-hello").textContent = me.name ? t("me.hello", { name: me.name }) : "";
    return load();
  }).catch((err) => upcoming.replaceChildren(el("p", { class: "form-error" }, errorText(err))))
    .finally(() => loaded(upcoming));
})();
