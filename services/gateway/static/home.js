/* Home: the hospitals that take bookings. */
(function () {
  "use strict";
  const { t, el, get, loaded, errorText } = window.App;
  const box = document.getElementById("hospitals");
  const pin = '<svg viewBox="0 0 24 24"><path fill="currentColor" d="M12 2a7 7 0 0 0-7 7c0 5.2 7 13 7 13s7-7.8 7-13a7 7 0 0 0-7-7zm0 9.5A2.5 2.5 0 1 1 12 6.5a2.5 2.5 0 0 1 0 5z"/></svg>';
  const phone = '<svg viewBox="0 0 24 24"><path fill="currentColor" d="M6.6 10.8a15.1 15.1 0 0 0 6.6 6.6l2.2-2.2a1 1 0 0 1 1-.25 11.4 11.4 0 0 0 3.6.57 1 1 0 0 1 1 1V20a1 1 0 0 1-1 1A17 17 0 0 1 3 4a1 1 0 0 1 1-1h3.5a1 1 0 0 1 1 1c0 1.25.2 2.45.57 3.57a1 1 0 0 1-.25 1z"/></svg>';

  function icon(svg) { const s = el("span"); s.innerHTML = svg; return s.firstChild; } // constant markup only

  function card(h) {
    const rules = h.rules || {};
    return el("a", { class: "card hospital-card", href: "/hospitals/" + encodeURIComponent(h.hospital_id), "data-hospital-id": h.hospital_id },
      el("div", { class: "hospital-top" },
        el("span", { class: "hospital-mark", "aria-hidden": "true" }, "+"),
        el("div", null, el("h3", null, h.name), el("span", { class: "badge badge-brand" }, h.level || ""))),
      h.address ? el("div", { class: "meta" }, icon(pin), el("span", null, h.address)) : null,
      h.contact ? el("div", { class: "meta" }, icon(phone), el("span", null, t("home.contact") + " " + h.contact)) : null,
      rules.release_days ? el("div", { class: "meta muted small" }, t("home.release", { days: rules.release_days, time: String(rules.release_time || "").slice(0, 5) })) : null,
      el("div", { class: "go" }, el("span", null, t("home.book")), el("span", { "aria-hidden": "true" }, "→")));
  }

  get("/api/v1/hospitals").then((answer) => {
    const list = answer.hospitals || [];
    box.replaceChildren(...(list.length ? list.map(card) : [el("p", { class: "empty" }, t("home.empty"))]));
  }).catch((err) => {
    box.replaceChildren(el("p", { class: "form-error" }, errorText(err)));
  }).finally(() => loaded(box));
})();
