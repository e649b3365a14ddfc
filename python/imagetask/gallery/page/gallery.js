/* imagetask gallery: shows the rows of one run, or of two side by side, and keeps the marks
 * (keep / reject) chosen on a run's images.
 *
 * The data sits next to the page as scripts (so that it loads from file:// as well as from a
 * server): <page>-data/meta.js calls gallery.meta(...) with the runs, the input columns and
 * the layout of the data files; each <page>-data/<i>.js calls gallery.chunk(i, entries), and
 * <page>-data/details-<i>.js calls gallery.details(i, metadata) with the whole metadata of
 * its generations (loaded when the lightbox shows one). A data file is loaded when a page
 * of prompts needs it (all of them for a search). An entry is [inputs, generations of run
 * A, generations of run B], inputs the texts of meta.columns in order; a generation is
 * [dir, name, facts, error, sha256] with the trailing nulls left out: dir and name null
 * when there is no image (else the run's dirs[dir] + name), sha256 left out when the
 * name's stem is it. With meta.sources, an entry ends with the images its row was edited
 * from in each run (null where the run lacks the row), in the same form, facts.source
 * naming each one's column. The page state (search, column, filter, page, page size) lives
 * in the URL's #fragment; the marks live in the browser's storage under the run's id.
 */
"use strict";

(() => {
  const SIZES = [20, 50, 100, 200];
  const DEFAULT_SIZE = 50;
  const MARKS = "imagetask-marks:";
  const $ = (id) => document.getElementById(id);
  const state = {
    meta: null,
    chunks: [],
    details: [],
    loading: new Map(),
    matches: new Map(),
    render: 0,
    images: 0,
    loaded: 0,
    broken: 0,
    violations: 0,
    summary: "",
    shown: [],
    open: -1,
    marks: new Map(),
    saved: true,
  };

  document.addEventListener("securitypolicyviolation", () => {
    state.violations += 1;
    showCounts();
  });

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const fmt = (n) => n.toLocaleString("en-US");
  const plural = (n, word) => `${fmt(n)} ${word}${n === 1 ? "" : "s"}`;
  const failed = (entry) =>
    entry.slice(1, state.meta.runs.length + 1).some((gens) => gens && gens.some((g) => g[3] !== undefined && g[3] !== null));

  function decode(run, raw) {
    const [dir = null, name = null, facts = {}, error = null, sha = null] = raw;
    const src = name === null ? null : run.dirs[dir] + name;
    const stem = name === null ? null : name.slice(0, name.lastIndexOf("."));
    return { src, facts, error, sha: sha || stem };
  }

  function loadScript(key, src, loaded) {
    if (loaded()) return Promise.resolve(loaded());
    let promise = state.loading.get(key);
    if (!promise) {
      promise = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = src;
        script.onload = () =>
          loaded() ? resolve(loaded()) : reject(new Error(`${src} holds no gallery data`));
        script.onerror = () => {
          state.loading.delete(key);
          reject(new Error(`cannot load ${src}`));
        };
        document.head.append(script);
      });
      state.loading.set(key, promise);
    }
    return promise;
  }

  const loadChunk = (i) => loadScript(i, `${state.meta.data}/${i}.js`, () => state.chunks[i]);
  const loadDetails = (i) =>
    loadScript(`d${i}`, `${state.meta.data}/details-${i}.js`, () => state.details[i]);

  function params() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const size = Number(hash.get("size"));
    const column = hash.get("col") || "";
    return {
      q: (hash.get("q") || "").trim(),
      col: state.meta.columns.includes(column) ? column : "",
      failures: hash.get("failures") === "1",
      page: Math.max(1, Number.parseInt(hash.get("page") || "1", 10) || 1),
      size: SIZES.includes(size) ? size : DEFAULT_SIZE,
    };
  }

  function go(changes) {
    const next = Object.assign(params(), changes);
    const hash = new URLSearchParams();
    if (next.q) hash.set("q", next.q);
    if (next.col) hash.set("col", next.col);
    if (next.failures) hash.set("failures", "1");
    if (next.page > 1) hash.set("page", String(next.page));
    if (next.size !== DEFAULT_SIZE) hash.set("size", String(next.size));
    const text = hash.toString();
    if (text === location.hash.slice(1)) render();
    else location.hash = text;
  }

  function setStatus(text, stateName) {
    const status = $("status");
    status.textContent = text;
    if (stateName) status.dataset.state = stateName;
  }

  function showCounts() {
    const status = $("status");
    Object.assign(status.dataset, {
      images: state.images,
      loaded: state.loaded,
      broken: state.broken,
      violations: state.violations,
    });
    if (status.dataset.state !== "ready") return;
    let text = state.summary;
    if (state.broken) text += ` \u00b7 ${plural(state.broken, "image")} did not load`;
    if (state.violations) text += ` \u00b7 ${plural(state.violations, "blocked request")}`;
    if (!state.saved) text += " \u00b7 the browser keeps no marks: export them before leaving";
    status.textContent = text;
  }

  /* ---- search ---- */

  function searched(p) {
    const columns = state.meta.columns;
    const at = p.col ? [columns.indexOf(p.col)] : columns.map((_, i) => i);
    const query = p.q.toLowerCase();
    return (entry) => at.some((i) => (entry[0][i] || "").toLowerCase().includes(query));
  }

  async function matching(p) {
    const key = `${p.failures}\n${p.col}\n${p.q.toLowerCase()}`;
    if (state.matches.has(key)) return state.matches.get(key);
    const { chunks, chunk_size: size } = state.meta;
    const matches = searched(p);
    const needed = chunks.map((_, i) => i).filter((i) => !p.failures || chunks[i][1] > 0);
    const found = [];
    for (const [done, index] of needed.entries()) {
      setStatus(`Searching: data file ${fmt(done + 1)} of ${fmt(needed.length)}\u2026`, "loading");
      const entries = await loadChunk(index);
      entries.forEach((entry, j) => {
        if (p.q && !matches(entry)) return;
        if (p.failures && !failed(entry)) return;
        found.push(index * size + j);
      });
    }
    state.matches.set(key, found);
    return found;
  }

  /* `text` with each occurrence of `query` (any case) in a <mark>. */
  function highlighted(node, text, query) {
    const lower = text.toLowerCase();
    let at = 0;
    let found = query ? lower.indexOf(query) : -1;
    while (found !== -1) {
      node.append(text.slice(at, found), el("mark", null, text.slice(found, found + query.length)));
      at = found + query.length;
      found = lower.indexOf(query, at);
    }
    node.append(text.slice(at));
    return node;
  }

  /* ---- marks ---- */

  const markKey = (input, k) => `${input}:${k}`;
  const storageKey = () => MARKS + state.meta.runs[0].id;

  function readMarks() {
    try {
      const stored = JSON.parse(localStorage.getItem(storageKey()) || "{}");
      Object.entries(stored.marks || {}).forEach(([key, [sha, mark]]) => {
        if (/^\d+:\d+$/.test(key) && (mark === "keep" || mark === "reject")) {
          state.marks.set(key, { sha, mark });
        }
      });
    } catch (error) {
      state.saved = false;
    }
  }

  function saveMarks() {
    const marks = {};
    state.marks.forEach(({ sha, mark }, key) => {
      marks[key] = [sha, mark];
    });
    try {
      localStorage.setItem(storageKey(), JSON.stringify({ run: state.meta.runs[0].name, marks }));
      state.saved = true;
    } catch (error) {
      state.saved = false;
    }
  }

  function markOf(item) {
    const found = state.marks.get(markKey(item.input, item.k));
    return found && found.sha === item.gen.sha ? found.mark : null;
  }

  /* Sets (or, when it is set already, clears) the mark of a shown image. */
  function setMark(item, mark) {
    if (!state.meta.marks || !item.gen.sha) return;
    const key = markKey(item.input, item.k);
    if (markOf(item) === mark) state.marks.delete(key);
    else state.marks.set(key, { sha: item.gen.sha, mark });
    saveMarks();
    showMark(item);
    if (state.open >= 0 && state.shown[state.open] === item) showMark(item, $("lb-marks"));
    showMarked();
    showCounts();
  }

  function markButtons(item, box) {
    const chosen = markOf(item);
    box.replaceChildren(
      ...["keep", "reject"].map((mark) => {
        const button = el("button", `mark-${mark}`, mark);
        button.type = "button";
        button.title = `${mark} (${mark[0]})`;
        button.setAttribute("aria-pressed", String(chosen === mark));
        button.addEventListener("click", (event) => {
          event.stopPropagation();
          setMark(item, mark);
        });
        return button;
      }),
    );
  }

  function showMark(item, box) {
    const mark = markOf(item);
    if (box) {
      markButtons(item, box);
      return;
    }
    item.figure.dataset.mark = mark || "";
    const buttons = item.figure.querySelector(".marks");
    if (buttons) markButtons(item, buttons);
  }

  function showMarked() {
    const counts = { keep: 0, reject: 0 };
    state.marks.forEach(({ mark }) => {
      counts[mark] += 1;
    });
    $("marked").textContent = `${fmt(counts.keep)} kept \u00b7 ${fmt(counts.reject)} rejected`;
    $("export").disabled = state.marks.size === 0;
  }

  function exportMarks() {
    const marks = [...state.marks.entries()]
      .map(([key, { sha, mark }]) => {
        const [input, generation] = key.split(":").map(Number);
        return { input, generation, sha256: sha, mark };
      })
      .sort((a, b) => a.input - b.input || a.generation - b.generation);
    const run = state.meta.runs[0].name;
    const data = { format: "imagetask-marks", version: 1, run, marks };
    const blob = new Blob([`${JSON.stringify(data, null, 1)}\n`], { type: "application/json" });
    const link = el("a");
    link.href = URL.createObjectURL(blob);
    link.download = `${run}.marks.json`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  }

  /* ---- cards ---- */

  function watch(img, figure, src, ticket) {
    state.images += 1;
    const done = (ok) => {
      if (ticket !== state.render) return;
      if (ok) {
        state.loaded += 1;
        img.classList.add("loaded");
      } else {
        state.broken += 1;
        figure.classList.add("broken");
        figure.append(el("p", "error", `the image file did not load: ${decodeURI(src)}`));
      }
      showCounts();
    };
    img.addEventListener("load", () => done(img.naturalWidth > 0), { once: true });
    img.addEventListener("error", () => done(false), { once: true });
  }

  function factText(facts) {
    const parts = [];
    if (facts.seed !== undefined) parts.push(`seed ${facts.seed}`);
    if (facts.latency_s !== undefined) parts.push(`${facts.latency_s.toFixed(2)} s`);
    if (facts.bytes !== undefined) parts.push(`${fmt(Math.round(facts.bytes / 102.4) / 10)} kB`);
    if (facts.tokens !== undefined) parts.push(plural(facts.tokens, "token"));
    if (facts.cost_usd !== undefined) parts.push(`$${facts.cost_usd.toFixed(4)}`);
    return parts.join(" \u00b7 ");
  }

  function generations(run, r, gens, input, ticket) {
    const box = el("div", "gens");
    if (!gens) {
      box.append(el("p", "absent", `not in ${run.name}`));
      return box;
    }
    gens.forEach((raw, k) => {
      const gen = decode(run, raw);
      const figure = el("figure", "gen");
      const item = { run, r, input, k, gen, figure, position: state.shown.length };
      state.shown.push(item);
      figure.tabIndex = 0;
      figure.dataset.input = input;
      figure.dataset.generation = k;
      if (gen.src !== null) {
        const link = el("a");
        link.href = gen.src;
        link.addEventListener("click", (event) => {
          event.preventDefault();
          openLightbox(item.position);
        });
        const img = el("img");
        img.loading = "lazy";
        img.decoding = "async";
        img.alt = `generation ${k + 1}`;
        watch(img, figure, gen.src, ticket);
        img.src = gen.src;
        link.append(img);
        figure.append(link);
      } else {
        figure.addEventListener("click", () => openLightbox(item.position));
      }
      if (gen.error !== null) {
        figure.classList.add("failed");
        figure.append(el("p", "error", gen.error));
      }
      const caption = el("figcaption", null, gen.error === null ? `${k + 1}` : `${k + 1} \u00b7 failed`);
      const facts = factText(gen.facts);
      if (facts) caption.append(el("span", "facts", facts));
      figure.append(caption);
      if (gen.facts.revised_prompt !== undefined) {
        figure.append(el("p", "revised", gen.facts.revised_prompt));
      }
      if (state.meta.marks && gen.sha) {
        figure.append(el("p", "marks"));
        showMark(item);
      }
      box.append(figure);
    });
    return box;
  }

  function sourceImages(run, list, ticket) {
    const box = el("div", "gens sources");
    list.forEach((raw) => {
      const gen = decode(run, raw);
      const figure = el("figure", "gen source");
      if (gen.src !== null) {
        const img = el("img");
        img.loading = "lazy";
        img.alt = gen.facts.source;
        watch(img, figure, gen.src, ticket);
        img.src = gen.src;
        figure.append(img);
      }
      if (gen.error !== null) figure.append(el("p", "error", gen.error));
      figure.append(el("figcaption", null, gen.facts.source));
      box.append(figure);
    });
    return box;
  }

  function inputList(entry, query, column) {
    const list = el("dl", "inputs");
    state.meta.columns.forEach((name, i) => {
      const value = entry[0][i];
      if (value === undefined || value === null || name === state.meta.prompt) return;
      list.append(el("dt", null, name));
      list.append(highlighted(el("dd"), value, column === "" || column === name ? query : ""));
    });
    return list;
  }

  function entryNode(index, entry, p, ticket) {
    const article = el("article", "entry");
    if (failed(entry)) article.classList.add("has-failure");
    const query = p.q.toLowerCase();
    const prompt = el("div", "prompt");
    prompt.append(el("span", "num", `#${fmt(index + 1)}`));
    const text = entry[0][state.meta.columns.indexOf(state.meta.prompt)];
    const shown = el("p", "text");
    if (text) highlighted(shown, text, p.col === "" || p.col === state.meta.prompt ? query : "");
    else shown.textContent = "(no prompt)";
    prompt.append(shown);
    const inputs = inputList(entry, query, p.col);
    if (inputs.childElementCount) prompt.append(inputs);
    article.append(prompt);
    const runs = state.meta.runs;
    runs.forEach((run, r) => {
      const gens = generations(run, r, entry[r + 1], index, ticket);
      const sources = state.meta.sources ? entry[runs.length + 1 + r] : null;
      if (!sources) {
        article.append(gens);
        return;
      }
      const column = el("div", "edited");
      column.append(sourceImages(run, sources, ticket), gens);
      article.append(column);
    });
    return article;
  }

  /* ---- lightbox ---- */

  function openLightbox(position) {
    const item = state.shown[position];
    if (!item) return;
    state.open = position;
    const { gen, run, input, k } = item;
    const size = state.meta.chunk_size;
    const entry = state.chunks[Math.floor(input / size)][input % size];
    const box = $("lightbox");
    box.hidden = false;
    box.dataset.input = input;
    box.dataset.generation = k;
    document.body.classList.add("viewing");
    const image = $("lb-image");
    image.hidden = gen.src === null;
    if (gen.src !== null) {
      image.src = gen.src;
      image.alt = `prompt ${input + 1}, generation ${k + 1}`;
    } else {
      image.removeAttribute("src");
    }
    $("lb-error").hidden = gen.error === null;
    $("lb-error").textContent = gen.error || "";
    const label = state.meta.runs.length > 1 ? `${run.name} \u00b7 ` : "";
    $("lb-where").textContent =
      `${label}prompt #${fmt(input + 1)} \u00b7 generation ${k + 1} \u00b7 ` +
      `image ${fmt(position + 1)} of ${fmt(state.shown.length)} on this page`;
    const marks = $("lb-marks");
    marks.hidden = !(state.meta.marks && gen.sha);
    if (!marks.hidden) showMark(item, marks);
    const inputs = $("lb-inputs");
    inputs.replaceChildren();
    state.meta.columns.forEach((name, i) => {
      if (entry[0][i] === undefined || entry[0][i] === null) return;
      inputs.append(el("dt", null, name), el("dd", null, entry[0][i]));
    });
    const facts = [factText(gen.facts)];
    if (gen.sha) facts.push(`sha256 ${gen.sha}`);
    $("lb-facts").textContent = facts.filter(Boolean).join(" \u00b7 ");
    $("lb-prev").disabled = position === 0;
    $("lb-next").disabled = position === state.shown.length - 1;
    const meta = $("lb-meta");
    meta.textContent = "\u2026";
    const chunk = Math.floor(input / size);
    loadDetails(chunk)
      .then((details) => {
        if (state.open !== position) return;
        meta.textContent = JSON.stringify(details[input % size][item.r][k], null, 2);
      })
      .catch((error) => {
        meta.textContent = error.message;
      });
    $("lb-close").focus();
  }

  function showSize() {
    const image = $("lb-image");
    const item = state.shown[state.open];
    if (!item || !image.naturalWidth) return;
    const facts = $("lb-facts");
    facts.textContent = `${image.naturalWidth}\u00d7${image.naturalHeight} px \u00b7 ${facts.textContent}`;
  }

  function closeLightbox() {
    const item = state.shown[state.open];
    state.open = -1;
    $("lightbox").hidden = true;
    document.body.classList.remove("viewing");
    if (item) item.figure.focus();
  }

  /* ---- page ---- */

  async function render() {
    const ticket = ++state.render;
    const shown = location.hash;
    const p = params();
    const meta = state.meta;
    const search = $("search");
    if (document.activeElement !== search) search.value = p.q;
    $("column").value = p.col;
    $("failures").checked = p.failures;
    $("size").value = String(p.size);
    let total = meta.entries;
    let at = (k) => k;
    const filtered = Boolean(p.q || p.failures);
    try {
      if (filtered) {
        const found = await matching(p);
        total = found.length;
        at = (k) => found[k];
      }
      if (ticket !== state.render) return;
      const pages = Math.max(1, Math.ceil(total / p.size));
      const page = Math.min(p.page, pages);
      const first = (page - 1) * p.size;
      const last = Math.min(total, first + p.size);
      const wanted = [];
      for (let k = first; k < last; k += 1) wanted.push(at(k));
      const size = meta.chunk_size;
      setStatus("Loading\u2026", "loading");
      await Promise.all([...new Set(wanted.map((g) => Math.floor(g / size)))].map(loadChunk));
      if (ticket !== state.render) return;
      Object.assign(state, { images: 0, loaded: 0, broken: 0, shown: [] });
      if (state.open >= 0) closeLightbox();
      const main = $("entries");
      main.replaceChildren(
        ...wanted.map((g) => entryNode(g, state.chunks[Math.floor(g / size)][g % size], p, ticket)),
      );
      if (!wanted.length) {
        main.append(el("p", "empty", filtered ? "No prompt matches." : "The run has no rows yet."));
      }
      $("where").textContent = `page ${fmt(page)} of ${fmt(pages)}`;
      $("prev").disabled = page <= 1;
      $("next").disabled = page >= pages;
      state.page = page;
      const range = `prompts ${fmt(first + 1)}\u2013${fmt(last)} of ${fmt(total)}`;
      state.summary = total ? `${range}${filtered ? " matching" : ""}` : "no prompts";
      $("status").dataset.state = "ready";
      $("status").dataset.shown = wanted.length;
      $("status").dataset.hash = shown;
      showCounts();
      window.scrollTo(0, 0);
    } catch (error) {
      if (ticket === state.render) setStatus(`Cannot show the run: ${error.message}`, "error");
    }
  }

  /* The task configuration as nested name/value lists. */
  function configTree(value) {
    if (value === null || typeof value !== "object") {
      return el("span", "value", value === null ? "none" : JSON.stringify(value));
    }
    if (Array.isArray(value)) {
      if (!value.length) return el("span", "value", "[]");
      const list = el("ol");
      value.forEach((item) => {
        const node = el("li");
        node.append(configTree(item));
        list.append(node);
      });
      return list;
    }
    const names = Object.keys(value).filter((name) => name !== "type_info");
    const list = el("dl", "config");
    const type = value.type_info;
    if (type && typeof type === "object") {
      list.append(el("dt", null, "type"), el("dd", "type", `${type.module}.${type.name}`));
    }
    if (!names.length && !type) return el("span", "value", "{}");
    names.forEach((name) => {
      const item = el("dd");
      item.append(configTree(value[name]));
      list.append(el("dt", null, name), item);
    });
    return list;
  }

  function runCard(run, label) {
    const card = el("section", "run");
    card.append(el("h1", null, label ? `${label} \u00b7 ${run.name}` : run.name));
    const facts = el("p", "facts");
    const fact = (name, value, className) => {
      const item = el("span", className);
      if (name) item.append(el("b", null, name), " ");
      item.append(value);
      facts.append(item);
    };
    fact("task", run.task);
    fact(run.models.length === 1 ? "model" : "models", run.models.join(", ") || "\u2014");
    fact("", plural(run.rows, "prompt"));
    fact("", plural(run.images, "image"));
    fact("", `${fmt(run.failures)} failed`, run.failures ? "bad" : "");
    fact("data", run.format);
    if (!run.complete) fact("", "the run has not finished", "bad");
    if (run.thumbnails) {
      const kind = run.thumbnails === "resized" ? "large images shrunk" : "the images as they are";
      fact("previews", `gallery/thumbs/ (${kind})`);
    }
    card.append(facts);
    const details = el("details");
    details.append(el("summary", null, "task configuration"));
    details.append(configTree(run.config));
    card.append(details);
    return card;
  }

  function header(meta) {
    const labels = meta.runs.length > 1 ? ["A", "B"] : [""];
    const runs = $("runs");
    runs.replaceChildren(...meta.runs.map((run, r) => runCard(run, labels[r])));
    if (meta.runs.length > 1) {
      const [a, b] = meta.runs;
      const matched = [
        `${plural(meta.matched, "prompt")} in both runs`,
        `${fmt(a.rows - meta.matched)} only in A`,
        `${fmt(b.rows - meta.matched)} only in B`,
      ];
      runs.append(el("p", "matched", matched.join(" \u00b7 ")));
      const columns = $("columns");
      columns.append(el("span", null, "prompt"));
      meta.runs.forEach((run, r) => {
        const models = run.models.join(", ");
        columns.append(el("span", null, `${labels[r]} \u00b7 ${run.name} (${models})`));
      });
    }
    meta.columns.forEach((name) => {
      const option = el("option", null, name);
      option.value = name;
      $("column").append(option);
    });
    document.body.classList.add(`runs-${meta.runs.length}`);
    document.title = `imagetask gallery \u00b7 ${meta.runs.map((run) => run.name).join(" vs ")}`;
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (state.open >= 0) {
      const item = state.shown[state.open];
      if (key === "Escape") closeLightbox();
      else if (key === "ArrowLeft") openLightbox(Math.max(0, state.open - 1));
      else if (key === "ArrowRight") openLightbox(Math.min(state.shown.length - 1, state.open + 1));
      else if (key === "k" || key === "r") setMark(item, key === "k" ? "keep" : "reject");
      else return;
      event.preventDefault();
      return;
    }
    if (event.target.closest("input, select, textarea")) return;
    const figure = event.target.closest ? event.target.closest("figure.gen") : null;
    const item = figure ? state.shown.find((shown) => shown.figure === figure) : null;
    if (item && (key === "k" || key === "r")) setMark(item, key === "k" ? "keep" : "reject");
    else if (item && key === "Enter") openLightbox(item.position);
    else if (key === "ArrowLeft" && !$("prev").disabled) go({ page: state.page - 1 });
    else if (key === "ArrowRight" && !$("next").disabled) go({ page: state.page + 1 });
    else return;
    event.preventDefault();
  }

  function start() {
    header(state.meta);
    if (state.meta.marks) {
      $("choose").hidden = false;
      readMarks();
      showMarked();
      $("export").addEventListener("click", exportMarks);
    }
    let typing;
    $("search").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => go({ q: $("search").value.trim(), page: 1 }), 300);
    });
    $("controls").addEventListener("submit", (event) => {
      event.preventDefault();
      clearTimeout(typing);
      go({ q: $("search").value.trim(), page: 1 });
    });
    $("column").addEventListener("change", (event) => go({ col: event.target.value, page: 1 }));
    $("failures").addEventListener("change", (event) => {
      go({ failures: event.target.checked, page: 1 });
    });
    $("size").addEventListener("change", (event) => {
      go({ size: Number(event.target.value), page: 1 });
    });
    $("prev").addEventListener("click", () => go({ page: state.page - 1 }));
    $("next").addEventListener("click", () => go({ page: state.page + 1 }));
    $("lb-prev").addEventListener("click", () => openLightbox(state.open - 1));
    $("lb-next").addEventListener("click", () => openLightbox(state.open + 1));
    $("lb-close").addEventListener("click", closeLightbox);
    $("lb-image").addEventListener("load", showSize);
    document.addEventListener("keydown", onKey);
    window.addEventListener("storage", (event) => {
      if (event.key !== storageKey()) return;
      state.marks.clear();
      readMarks();
      showMarked();
      state.shown.forEach((item) => showMark(item));
    });
    window.addEventListener("hashchange", render);
    render();
  }

  window.gallery = {
    meta(meta) {
      state.meta = meta;
      start();
    },
    chunk(index, entries) {
      state.chunks[index] = entries;
    },
    details(index, metadata) {
      state.details[index] = metadata;
    },
  };
})();
