/* The schedule table (排班表) of one department for a week: a doctors × days table on wide screens,
   a strip of days with session cards on phones, or a plain list by day (the hotline console).
   Only open sessions are buttons that can be pressed; full, not-yet-open, closed and stopped ones
   show why and are disabled. */
(function () {
  "use strict";
  const { t, el, hm, money, periodText, titleText, shortDay, weekday, dayLabel, moment, todayISO, addDays } = window.App;
  const TITLE_RANK = { "主任医师": 0, "副主任医师": 1, "主治医师": 2, "医师": 3 };

  /* The state a session has for a channel: the API's `state` is the web patient's view. */
  function stateFor(s, channel) {
    if (channel === "web" || (s.state !== "open" && s.state !== "full")) return s.state;
    return ((s.remaining && s.remaining[channel]) || 0) > 0 ? "open" : "full";
  }

  function slotButton(s, channel, onPick, compact) {
    const state = stateFor(s, channel);
    const left = (s.remaining && s.remaining[channel]) || 0;
    let stateText;
    if (state === "open") stateText = t("state.remaining", { n: left });
    else if (state === "not_yet_open") stateText = t("state.not_yet_open");
    else stateText = t("state." + state);
    const sub = state === "not_yet_open" && s.opens_at ? t("state.opens_at", { time: moment(s.opens_at) })
      : state === "open" ? (compact ? t("dept.book") + " ›" : money(s.fee)) : null;
    const button = el("button", {
      type: "button", class: "slot s-" + state, "data-session-id": s.session_id, "data-state": state,
      disabled: state !== "open", "aria-disabled": state !== "open" ? "true" : null,
      title: s.doctor.name + " " + shortDay(s.date) + " " + periodText(s.period) + " · " + t("state." + state),
    },
    compact ? null : el("span", { class: "slot-period" }, el("span", null, periodText(s.period)), el("span", { class: "slot-sub" }, hm(s.start))),
    el("span", { class: "slot-state" }, stateText),
    sub ? el("span", { class: "slot-sub" }, sub) : null);
    if (state === "open") button.addEventListener("click", () => onPick(s));
    return button;
  }

  function doctorsOf(sessions) {
    const seen = new Map();
    sessions.forEach((s) => { if (!seen.has(s.doctor.doctor_id)) seen.set(s.doctor.doctor_id, s.doctor); });
    return Array.from(seen.values()).sort((a, b) => (TITLE_RANK[a.title] ?? 9) - (TITLE_RANK[b.title] ?? 9));
  }

  function days(from, n) { return Array.from({ length: n }, (_, i) => addDays(from, i)); }

  function weekTable(sessions, from, channel, onPick, doctorsInfo) {
    const today = todayISO();
    const dates = days(from, 7);
    const head = el("tr", null, el("th", { class: "doc-col", scope: "col" }, t("dept.doctor")),
      dates.map((d) => el("th", { scope: "col", class: d === today ? "today" : null },
        el("span", { class: "day-date" }, shortDay(d)), dayLabel(d))));
    const rows = doctorsOf(sessions).map((doc) => {
      const info = (doctorsInfo && doctorsInfo[doc.doctor_id]) || {};
      return el("tr", { "data-doctor-id": doc.doctor_id },
        el("td", { class: "doc" }, el("div", { class: "doc-name" }, doc.name),
          el("span", { class: "badge badge-brand doc-title" }, titleText(doc.title)),
          info.specialty ? el("div", { class: "doc-spec" }, info.specialty) : null),
        dates.map((d) => {
          const mine = sessions.filter((s) => s.doctor.doctor_id === doc.doctor_id && s.date === d);
          return el("td", { class: "cell" }, el("div", { class: "cell-slots" }, mine.map((s) => slotButton(s, channel, onPick))));
        }));
    });
    return el("table", { class: "week-table" }, el("thead", null, head), el("tbody", null, rows));
  }

  function sessionCard(s, channel, onPick, doctorsInfo) {
    const info = (doctorsInfo && doctorsInfo[s.doctor.doctor_id]) || {};
    return el("div", { class: "session-card", "data-session-id": s.session_id },
      el("div", null,
        el("div", null, el("span", { class: "doc-name" }, s.doctor.name), " ",
          el("span", { class: "badge badge-brand" }, titleText(s.doctor.title))),
        el("div", { class: "when" }, periodText(s.period) + " " + hm(s.start) + "–" + hm(s.end) + " · " + money(s.fee)),
        info.specialty ? el("div", { class: "doc-spec" }, info.specialty) : null),
      slotButton(s, channel, onPick, true));
  }

  function dayStrip(container, sessions, from, channel, onPick, doctorsInfo, selected) {
    const dates = days(from, 7);
    const openOn = (d) => sessions.some((s) => s.date === d && stateFor(s, channel) === "open");
    let current = selected || dates.find(openOn) || dates.find((d) => sessions.some((s) => s.date === d)) || dates[0];
    const strip = el("div", { class: "day-strip", role: "tablist" });
    const cards = el("div", { class: "day-cards" });
    function show(day) {
      current = day;
      strip.querySelectorAll(".day-chip").forEach((c) => c.setAttribute("aria-selected", c.dataset.date === day ? "true" : "false"));
      const mine = sessions.filter((s) => s.date === day);
      cards.replaceChildren(...(mine.length ? mine.map((s) => sessionCard(s, channel, onPick, doctorsInfo))
        : [el("p", { class: "empty" }, t("dept.empty_day"))]));
    }
    dates.forEach((d) => strip.append(el("button", {
      type: "button", class: "day-chip", role: "tab", "data-date": d, onclick: () => show(d),
    }, el("span", null, dayLabel(d)), el("b", null, shortDay(d).replace(/^\d+月/, "")),
    el("span", { class: "dot" + (openOn(d) ? "" : " none") }))));
    container.replaceChildren(strip, cards);
    show(current);
  }

  function listByDay(sessions, channel, onPick, doctorsInfo) {
    const byDay = new Map();
    sessions.forEach((s) => { if (!byDay.has(s.date)) byDay.set(s.date, []); byDay.get(s.date).push(s); });
    return Array.from(byDay.entries()).map(([d, list]) => el("div", { class: "day-group" },
      el("h3", null, shortDay(d) + " " + weekday(d)),
      el("div", { class: "booking-list compact" }, list.map((s) => sessionCard(s, channel, onPick, doctorsInfo)))));
  }

  /* Render into `container`; options: from, channel (web|phone), layout (auto|list), onPick, doctors. */
  function render(container, sessions, options) {
    const o = Object.assign({ channel: "web", layout: "auto" }, options);
    container.removeAttribute("aria-busy");
    if (!sessions.length) {
      container.replaceChildren(el("p", { class: "empty" }, t("dept.empty")));
      return;
    }
    if (o.layout === "list") {
      container.replaceChildren(...listByDay(sessions, o.channel, o.onPick, o.doctors));
      return;
    }
    const wide = window.matchMedia("(min-width: 760px)");
    const draw = () => {
      if (wide.matches) container.replaceChildren(weekTable(sessions, o.from, o.channel, o.onPick, o.doctors));
      else dayStrip(container, sessions, o.from, o.channel, o.onPick, o.doctors);
    };
    draw();
    if (container._scheduleListener) wide.removeEventListener("change", container._scheduleListener);
    container._scheduleListener = draw;
    wide.addEventListener("change", draw);
  }

  window.Schedule = { render, stateFor };
})();
