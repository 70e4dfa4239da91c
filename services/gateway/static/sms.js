/* The SMS outbox page is rendered on the server; this keeps it fresh while a demo runs. */
(function () {
  "use strict";
  const { el, get } = window.App;
  const list = document.getElementById("sms-list");
  const fmt = new Intl.DateTimeFormat("sv-SE", { timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit" });
  let latest = "";

  function article(m) {
    const d = new Date(String(m.created_at).replace(" ", "T"));
    return el("article", { class: "sms" },
      el("header", { class: "sms-head" }, el("span", { class: "sms-phone" }, m.phone_masked),
        el("time", { datetime: m.created_at }, isNaN(d) ? m.created_at : fmt.format(d))),
      el("p", { class: "sms-text" }, m.text),
      m.template ? el("p", { class: "sms-template" },
        [m.template, m.status, m.last_error].filter(Boolean).join(" · ")) : null);
  }

  async function refresh() {
    if (document.hidden) return;
    try {
      const answer = await get("/api/v1/dev/sms");
      const messages = answer.messages || [];
      // A new message or a changed state (queued → sent → delivered) redraws the list.
      const newest = messages.map((m) => m.message_id + m.status).join();
      if (newest !== latest) { list.replaceChildren(...messages.map(article)); latest = newest; }
    } catch (e) { /* the server-rendered list stays */ }
  }
  setInterval(refresh, 5000);
})();
