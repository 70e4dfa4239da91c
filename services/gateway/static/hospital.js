/* A hospital: its details, booking rules and departments (grouped under their parent). */
(function () {
  "use strict";
  const { t, el, get, loaded, errorText } = window.App;
  const head = document.getElementById("hospital");
  const id = head.dataset.hospitalId;
  const deptBox = document.getElementById("departments");
  const rulesBox = document.getElementById("rules");

  function deptLink(d) {
    return el("a", { class: "dept-link", href: "/departments/" + encodeURIComponent(d.department_id) + "?h=" + encodeURIComponent(id),
      "data-department-id": d.department_id }, d.name);
  }

  function groups(departments) {
    const tops = departments.filter((d) => !d.parent_id || !departments.some((p) => p.department_id === d.parent_id));
    const out = [];
    const loose = [];
    tops.forEach((top) => {
      const below = departments.filter((d) => d !== top && isUnder(departments, d, top));
      if (below.length) out.push(el("section", { class: "card dept-group" }, el("h3", null, top.name), el("div", { class: "dept-links" }, below.map(deptLink))));
      else loose.push(top);
    });
    if (loose.length) out.push(el("section", { class: "card dept-group" }, el("h3", null, out.length ? t("hospital.other") : t("hospital.departments")),
      el("div", { class: "dept-links" }, loose.map(deptLink))));
    return out;
  }

  function isUnder(all, d, top) {
    let cur = d;
    for (let i = 0; i < 20 && cur; i++) {
      if (cur.parent_id === top.department_id) return true;
      cur = all.find((x) => x.department_id === cur.parent_id);
    }
    return false;
  }

  Promise.all([get("/api/v1/hospitals"), get("/api/v1/hospitals/" + encodeURIComponent(id) + "/departments")]).then(([hs, ds]) => {
    const h = (hs.hospitals || []).find((x) => x.hospital_id === id);
    if (!h) { head.replaceChildren(el("p", { class: "empty" }, t("hospital.notfound"))); return; }
    document.title = h.name + " · " + t("site.name");
    document.getElementById("crumb-hospital").textContent = h.name;
    head.replaceChildren(el("span", { class: "hospital-mark", "aria-hidden": "true" }, "+"),
      el("div", null, el("h1", null, h.name),
        el("p", { class: "muted" }, [h.level, h.address, h.contact].filter(Boolean).join(" · "))));
    const r = h.rules || {};
    const items = [];
    if (r.release_days) items.push(t("hospital.rule.release", { time: String(r.release_time || "").slice(0, 5), days: r.release_days }));
    if (r.cutoff_time) items.push(t("hospital.rule.cutoff", { days: r.cutoff_days_before, time: String(r.cutoff_time).slice(0, 5) }));
    items.push(t("hospital.rule.realname"), t("hospital.rule.noshow"));
    rulesBox.replaceChildren(...items.map((x) => el("li", null, x)));
    const list = ds.departments || [];
    deptBox.replaceChildren(...(list.length ? groups(list) : [el("p", { class: "empty" }, t("common.none"))]));
  }).catch((err) => {
    head.replaceChildren(el("p", { class: "form-error" }, errorText(err)));
  }).finally(() => { loaded(head); });
})();
