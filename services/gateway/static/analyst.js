/* 预约诊疗统计 (/analyst): the health bureau's dashboard, and a hospital admin's, scoped to their hospital.
   Filters (date range, hospital, department, channel) live in the URL; each section asks one table of
   GET /api/v1/stats/<table>, draws it with Apache ECharts (vendored, window.echarts) and lists the
   same rows in a table whose columns come from the answer, with a CSV link of the same query.
   A figure the service answers as null is "no data" (无数据), never 0. */
(function () {
  "use strict";
  const App = window.App;
  const { t, el, $, $$, get, LANG, todayISO, addDays, requireRole, staffHello, showError, hideError, errorText, toast } = App;
  const echarts = window.echarts;
  const enc = encodeURIComponent;
  const CHANNELS = ["web", "phone", "window"];
  const COLORS = { web: "#0b6e63", phone: "#e08a1e", window: "#5b7db1", second: "#c9372c", third: "#8a6fb8" };
  const DEFAULT_DAYS = 30;
  const LAG_EVERY_MS = 15000;

  const form = $("#stats-filters");
  const hospitalSelect = $("#f-hospital");
  const departmentSelect = $("#f-department");
  // departments: a promise of each hospital's list, for the filter
  const st = { me: null, hospitals: [], departments: {}, filters: null, ticket: 0, charts: {} };

  /* --- what each section asks and draws ------------------------------------------------------ */
  const byScope = (f) => [f.hospital_id ? "department" : "hospital"];
  const SECTIONS = [
    { id: "bookings-day", table: "bookings", filters: ["hospital_id", "department_id", "channel"],
      groupBy: () => ["day", "channel"], draw: bookingsPerDay },
    { id: "utilisation", table: "bookings", filters: ["hospital_id", "department_id", "channel"], groupBy: byScope,
      title: (f) => (f.hospital_id ? "stats.chart.utilisation_department" : "stats.chart.utilisation_hospital"),
      draw: (rows, f, columns) => rateBars(rows, byScope(f)[0], [["utilisation", COLORS.web], ["no_show_rate", COLORS.second]], columns) },
    { id: "sellout", table: "sellout", filters: ["hospital_id", "department_id"], groupBy: () => ["hospital", "department"],
      draw: sellout },
    { id: "stops", table: "stops", filters: ["hospital_id", "department_id"], groupBy: byScope,
      title: (f) => (f.hospital_id ? "stats.chart.stops_department" : "stats.chart.stops_hospital"),
      draw: (rows, f, columns) => rateBars(rows, byScope(f)[0], [["stop_rate", COLORS.phone]], columns) },
    { id: "share", table: "share", filters: ["hospital_id"], groupBy: () => ["hospital"],
      draw: (rows, f, columns) => rateBars(rows, "hospital", [["booking_share", COLORS.window], ["phone_share", COLORS.phone]], columns) },
    { id: "accounts", table: "accounts", filters: [], groupBy: () => ["day"], province: true, draw: accountsPerDay },
  ];

  /* --- filters ------------------------------------------------------------------------------- */
  const ISO = /^\d{4}-\d{2}-\d{2}$/;
  function filtersFromUrl() {
    const p = new URLSearchParams(location.search);
    const to = ISO.test(p.get("to") || "") ? p.get("to") : todayISO();
    const from = ISO.test(p.get("from") || "") ? p.get("from") : addDays(to, -(DEFAULT_DAYS - 1));
    return { from: from, to: to, hospital_id: p.get("hospital_id") || "", department_id: p.get("department_id") || "",
      channel: CHANNELS.indexOf(p.get("channel")) >= 0 ? p.get("channel") : "" };
  }
  function filtersFromForm() {
    return { from: form.from.value, to: form.to.value, hospital_id: hospitalSelect.value,
      department_id: hospitalSelect.value ? departmentSelect.value : "", channel: form.channel.value };
  }
  function keepInUrl(f) {
    const p = new URLSearchParams();
    ["from", "to", "hospital_id", "department_id", "channel"].forEach((k) => { if (f[k]) p.set(k, f[k]); });
    const lang = new URLSearchParams(location.search).get("lang");
    if (lang) p.set("lang", lang);
    history.replaceState(null, "", location.pathname + "?" + p.toString());
  }
  /* The query string of a section: the same for its JSON, its table and its CSV link. */
  function queryOf(section, f) {
    const p = new URLSearchParams({ from: f.from, to: f.to });
    section.filters.forEach((k) => { if (f[k]) p.set(k, f[k]); });
    p.set("group_by", section.groupBy(f).join(","));
    return p.toString();
  }

  async function departmentsOf(hospitalId) {
    if (!st.departments[hospitalId]) {
      st.departments[hospitalId] = get("/api/v1/hospitals/" + enc(hospitalId) + "/departments")
        .then((a) => a.departments || []).catch(() => []);
    }
    return st.departments[hospitalId];
  }
  async function fillDepartments(hospitalId, wanted) {
    departmentSelect.replaceChildren(el("option", { value: "" }, t("stats.all_departments")));
    departmentSelect.disabled = !hospitalId;
    if (!hospitalId) return;
    const departments = await departmentsOf(hospitalId);
    departments.forEach((d) => departmentSelect.append(
      el("option", { value: d.department_id, selected: d.department_id === wanted || null }, "\u3000".repeat(d.depth || 0) + d.name)));
  }

  /* --- names: the answer's own name column, else what the page knows, else the code ---------- */
  // A dimension's column in a row: hospital -> hospital_id (named by hospital_name), day and channel as they are.
  const dimKey = (dim) => (dim === "day" || dim === "channel" ? dim : dim + "_id");
  function nameKey(columns, key) {
    const wanted = key.replace(/_id$/, "") + "_name";
    return key !== wanted && columns.some((c) => c.kind === "name" && c.key === wanted) ? wanted : null;
  }
  function hospitalName(id) { const h = st.hospitals.find((x) => x.hospital_id === id); return h ? h.name : id; }
  function label(row, key, columns) {
    const name = nameKey(columns, key);
    if (name && row[name]) return String(row[name]);
    const value = row[key];
    if (value === null || value === undefined || value === "") return t("stats.no_data");
    if (key === "channel") return t("channel." + value);
    if (key === "hospital_id") return hospitalName(value);
    return String(value);
  }

  /* --- figures ------------------------------------------------------------------------------- */
  const isMissing = (v) => v === null || v === undefined;
  function decimals(v) { return Number.isInteger(v) ? String(v) : Number(v).toFixed(1); }
  function shown(value, kind) {
    if (isMissing(value)) return t("stats.no_data");
    if (kind === "rate") return (Number(value) * 100).toFixed(1) + "%";
    if (kind === "minutes" || kind === "days") return decimals(Number(value));
    return String(value);
  }
  const percent = (v) => (isMissing(v) ? null : Math.round(Number(v) * 1000) / 10);
  const colName = (c) => (LANG === "zh" ? c.zh || c.en || c.key : c.en || c.zh || c.key);

  function drawTable(section, answer) {
    const table = $("#table-" + section.id);
    const columns = answer.columns || [];
    // A name column that names a dimension is shown in that dimension's cell, not twice.
    const paired = new Set(columns.filter((c) => c.kind === "dim").map((c) => nameKey(columns, c.key)).filter(Boolean));
    const visible = columns.filter((c) => !paired.has(c.key));
    const heading = (c) => {  // a dimension shown by its name is headed as the name is (医院, not 医院编号)
      const name = c.kind === "dim" ? nameKey(columns, c.key) : null;
      return colName(name ? columns.find((x) => x.key === name) : c);
    };
    table.querySelector("thead").replaceChildren(el("tr", null,
      visible.map((c) => el("th", { scope: "col", "data-key": c.key, class: c.kind === "dim" || c.kind === "name" ? null : "num" }, heading(c)))));
    const rows = answer.rows || [];
    const body = rows.length ? rows.map((row) => el("tr", null, visible.map((c) => {
      const value = row[c.key];
      const text = c.kind === "dim" ? label(row, c.key, columns) : shown(value, c.kind);
      return el("td", { "data-key": c.key, "data-value": isMissing(value) ? "" : String(value),
        class: isMissing(value) && c.kind !== "dim" ? "num no-data" : c.kind === "dim" || c.kind === "name" ? null : "num" }, text);
    }))) : [el("tr", null, el("td", { colspan: String(Math.max(1, visible.length)), class: "muted center no-data" }, t("stats.no_data")))];
    table.querySelector("tbody").replaceChildren(...body);
  }

  /* --- charts -------------------------------------------------------------------------------- */
  function base() {
    return {
      animationDuration: 300,
      textStyle: { fontFamily: getComputedStyle(document.body).fontFamily },
      // Drawn on the canvas, not as HTML: the page's CSP allows no inline styles.
      tooltip: { trigger: "axis", renderMode: "richText", axisPointer: { type: "shadow" } },
      legend: { top: 0, type: "scroll" },
      grid: { left: 8, right: 24, top: 40, bottom: 8 },
    };
  }
  function empty() {
    return { title: { text: t("stats.no_data"), left: "center", top: "middle",
      textStyle: { color: "#7b8a93", fontSize: 15, fontWeight: "normal" } }, xAxis: { show: false }, yAxis: { show: false }, series: [] };
  }
  function daysOf(rows, f) {
    const days = new Set(rows.map((r) => r.day).filter(Boolean));
    // Every day of a range up to a quarter: an empty day shows as a gap, not as a bar of 0.
    if (f.from <= f.to && daysBetween(f.from, f.to) <= 92) for (let d = f.from; d <= f.to; d = addDays(d, 1)) days.add(d);
    return Array.from(days).sort();
  }
  function daysBetween(a, b) { return Math.round((Date.parse(b) - Date.parse(a)) / 86400000); }
  const dayAxis = (days) => ({ type: "category", data: days, axisLabel: { formatter: (d) => d.slice(5), hideOverlap: true } });

  function bookingsPerDay(rows, f) {
    if (!rows.length) return { option: empty() };
    const days = daysOf(rows, f);
    const channels = CHANNELS.filter((c) => (!f.channel || c === f.channel) && rows.some((r) => r.channel === c));
    const series = channels.map((c) => ({
      name: t("channel." + c), type: "bar", stack: "booked", color: COLORS[c], barMaxWidth: 28,
      data: days.map((d) => { const row = rows.find((r) => r.day === d && r.channel === c); return row && !isMissing(row.booked) ? row.booked : null; }),
    }));
    return { option: Object.assign(base(), { xAxis: dayAxis(days), yAxis: { type: "value", minInterval: 1 }, series: series }) };
  }

  function accountsPerDay(rows, f, columns) {
    if (!rows.length) return { option: empty() };
    const days = daysOf(rows, f);
    const figure = (key, color) => ({
      name: colName(columns.find((c) => c.key === key) || { key: key }), type: "bar", color: color, barMaxWidth: 20,
      data: days.map((d) => { const row = rows.find((r) => r.day === d); return row && !isMissing(row[key]) ? row[key] : null; }),
    });
    return { option: Object.assign(base(), { xAxis: dayAxis(days), yAxis: { type: "value", minInterval: 1 },
      series: [figure("registrations", COLORS.web), figure("bans", COLORS.second)] }) };
  }

  /* Horizontal bars, one group per hospital or department: long Chinese names stay readable on a phone. */
  function categoryBars(rows, labels, figures, valueAxis, labelWidth) {
    if (figures.every(([, , values]) => values.every(isMissing))) return { option: empty() };
    const option = Object.assign(base(), {
      yAxis: { type: "category", data: labels, inverse: true, axisLabel: { width: labelWidth, overflow: "truncate" } },
      xAxis: valueAxis,
      series: figures.map(([name, color, values]) => ({ name: name, type: "bar", color: color, barMaxWidth: 18, data: values })),
    });
    return { option: option, height: Math.max(240, 70 + labels.length * (14 + 14 * figures.length)) };
  }
  /* Names take at most a third of the chart: a phone keeps room for the bars, a desktop shows whole names. */
  function nameWidth() { return Math.max(80, Math.min(200, Math.round($("#stats").clientWidth / 3.2))); }
  function rateBars(rows, dim, keys, columns) {
    if (!rows.length) return { option: empty() };
    const cols = columns || [];
    const labels = rows.map((r) => label(r, dimKey(dim), cols));
    const figures = keys.map(([key, color]) => [colName(cols.find((c) => c.key === key) || { key: key }), color,
      rows.map((r) => percent(r[key]))]);
    return categoryBars(rows, labels, figures, { type: "value", min: 0, axisLabel: { formatter: "{value}%" } }, nameWidth());
  }
  function sellout(rows, f, columns) {
    if (!rows.length) return { option: empty() };
    const manyHospitals = new Set(rows.map((r) => r.hospital_id)).size > 1;
    const labels = rows.map((r) => label(r, "department_id", columns) + (manyHospitals ? " · " + label(r, "hospital_id", columns) : ""));
    const value = (key) => rows.map((r) => (isMissing(r[key]) ? null : Math.round(Number(r[key]) * 10) / 10));
    return categoryBars(rows, labels, [[t("stats.series.median"), COLORS.web, value("sellout_median_minutes")],
      [t("stats.series.p90"), COLORS.phone, value("sellout_p90_minutes")]],
    { type: "value", min: 0, name: t("stats.unit.minutes"), nameLocation: "end", nameGap: 4 }, nameWidth());
  }

  function chartOf(section) {
    if (!st.charts[section.id]) {
      const node = $("#chart-" + section.id);
      st.charts[section.id] = echarts.init(node, null, { renderer: "canvas", locale: LANG === "zh" ? "ZH" : "EN" });
      new ResizeObserver(() => st.charts[section.id].resize()).observe(node);
    }
    return st.charts[section.id];
  }
  function drawChart(section, answer, f) {
    const node = $("#chart-" + section.id);
    const drawn = section.draw(answer.rows || [], f, answer.columns || []);
    node.style.height = (drawn.height || 280) + "px";
    const chart = chartOf(section);
    chart.resize();
    chart.setOption(drawn.option, true);
  }

  /* --- loading ------------------------------------------------------------------------------- */
  function busy(node, on) {
    if (on) {
      node.dataset.state = "loading";
      node.setAttribute("aria-busy", "true");
    } else node.removeAttribute("aria-busy");
  }

  async function loadSection(section, f, mine) {
    const card = $("#stats-" + section.id);
    const query = queryOf(section, f);
    busy(card, true);
    card.dataset.query = query;
    if (section.title) $("#title-" + section.id).textContent = t(section.title(f));
    $("#csv-" + section.id).href = "/api/v1/stats/" + section.table + ".csv?" + query;
    hideError(card.querySelector(".stats-card-error"));
    try {
      const answer = await get("/api/v1/stats/" + section.table + "?" + query);
      if (mine !== st.ticket) return;
      drawTable(section, answer);
      drawChart(section, answer, f);
      card.dataset.position = String(answer.position === undefined ? "" : answer.position);  // the store position counted
      card.dataset.state = "ready";
    } catch (err) {
      if (mine !== st.ticket) return;
      showError(card.querySelector(".stats-card-error"), err);
      drawTable(section, { columns: [], rows: [] });
      drawChart(section, { rows: [] }, f);
      card.dataset.state = "error";
    } finally {
      if (mine === st.ticket) busy(card, false);
    }
  }

  async function load() {
    const f = filtersFromForm();
    const errorBox = $("#stats-error");
    hideError(errorBox);
    if (!f.from || !f.to || f.from > f.to) {
      form.from.setAttribute("aria-invalid", "true");
      showError(errorBox, t("stats.bad_range"));
      return;
    }
    form.from.removeAttribute("aria-invalid");
    st.filters = f;
    keepInUrl(f);
    const mine = ++st.ticket;
    const grid = $("#stats");
    busy(grid, true);
    loadLag();
    await Promise.all(visibleSections().map((s) => loadSection(s, f, mine)));
    if (mine !== st.ticket) return;
    busy(grid, false);
    grid.dataset.state = "ready";
  }

  function visibleSections() {
    const province = st.me && st.me.role !== "hospital_admin";
    return SECTIONS.filter((s) => province || !s.province);
  }

  /* 统计截至 …: the figures are as of the moment the slowest projection last caught up. */
  const clock = new Intl.DateTimeFormat("zh-CN", { timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  function asOf(secondsBehind) {
    const p = Object.fromEntries(clock.formatToParts(new Date(Date.now() - secondsBehind * 1000)).map((x) => [x.type, x.value]));
    return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" + p.second;
  }
  async function loadLag() {
    const node = $("#stats-lag");
    try {
      const answer = await get("/api/v1/stats/lag");
      const projections = answer.projections || [];
      const behind = Math.max(0, ...projections.map((p) => Number(p.behind) || 0));
      const seconds = Math.max(0, ...projections.map((p) => Number(p.seconds_behind) || 0));
      node.textContent = behind > 0 ? t("stats.lag.behind", { time: asOf(seconds), n: behind, s: Math.round(seconds) })
        : t("stats.lag.current", { time: asOf(seconds) });
      node.dataset.behind = String(behind);
      node.classList.toggle("is-behind", behind > 0);
    } catch (err) {
      node.textContent = t("stats.lag.unknown");
      node.dataset.behind = "";
    }
  }

  /* --- start --------------------------------------------------------------------------------- */
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  hospitalSelect.addEventListener("change", () => fillDepartments(hospitalSelect.value, ""));

  requireRole(["analyst", "platform_admin", "hospital_admin"]).then(async (me) => {
    st.me = me;
    staffHello(me);
    const f = filtersFromUrl();
    form.from.value = f.from;
    form.to.value = f.to;
    form.channel.value = f.channel;
    st.hospitals = (await get("/api/v1/hospitals")).hospitals || [];
    if (me.role === "hospital_admin") {
      // The same page, scoped: the gateway answers only this hospital's figures to its admin.
      hospitalSelect.replaceChildren(el("option", { value: me.hospital_id }, hospitalName(me.hospital_id)));
      hospitalSelect.disabled = true;
      $("#stats-lead").textContent = t("stats.lead_hospital");
      $$(".stats-card").forEach((card) => {
        card.hidden = !visibleSections().some((s) => s.id === card.dataset.section);
      });
    } else {
      st.hospitals.forEach((h) => hospitalSelect.append(el("option", { value: h.hospital_id }, h.name)));
      hospitalSelect.value = st.hospitals.some((h) => h.hospital_id === f.hospital_id) ? f.hospital_id : "";
    }
    await fillDepartments(hospitalSelect.value, f.department_id);
    await load();
    setInterval(loadLag, LAG_EVERY_MS);
  }).catch((err) => toast(errorText(err)));
})();
