/* imagetask gallery: shows the rows of one run, or of two side by side.
 *
 * The data sits next to the page as scripts (so that it loads from file:// as well as from a
 * server): <page>-data/meta.js calls gallery.meta(...) with the runs and the layout of the
 * data files, and each <page>-data/<i>.js calls gallery.chunk(i, entries). A data file is
 * loaded when a page of prompts needs it (all of them for a search). An entry is
 * [prompt, generations of run A, generations of run B]; a generation is [dir, name] (an
 * image: the run's dirs[dir] + name), [dir, name, error] (an image whose row failed) or
 * [error] (a failure without an image). The page state (search, filter, page, page size)
 * lives in the URL's #fragment.
 */
"use strict";

(() => {
  const SIZES = [20, 50, 100, 200];
  const DEFAULT_SIZE = 50;
  const $ = (id) => document.getElementById(id);
  const state = {
    meta: null,
    chunks: [],
    loading: new Map(),
    matches: new Map(),
    render: 0,
    images: 0,
    loaded: 0,
    broken: 0,
    violations: 0,
    summary: "",
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
  const failed = (entry) => entry.slice(1).some((gens) => gens && gens.some((g) => g.length !== 2));

  function loadChunk(index) {
    if (state.chunks[index]) return Promise.resolve(state.chunks[index]);
    let promise = state.loading.get(index);
    if (!promise) {
      promise = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = `${state.meta.data}/${index}.js`;
        script.onload = () =>
          state.chunks[index]
            ? resolve(state.chunks[index])
            : reject(new Error(`${script.src} holds no gallery data`));
        script.onerror = () => {
          state.loading.delete(index);
          reject(new Error(`cannot load ${script.src}`));
        };
        document.head.append(script);
      });
      state.loading.set(index, promise);
    }
    return promise;
  }

  function params() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const size = Number(hash.get("size"));
    return {
      q: (hash.get("q") || "").trim(),
      failures: hash.get("failures") === "1",
      page: Math.max(1, Number.parseInt(hash.get("page") || "1", 10) || 1),
      size: SIZES.includes(size) ? size : DEFAULT_SIZE,
    };
  }

  function go(changes) {
    const next = Object.assign(params(), changes);
    const hash = new URLSearchParams();
    if (next.q) hash.set("q", next.q);
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
    status.textContent = text;
  }

  async function matching(p) {
    const key = `${p.failures}\n${p.q.toLowerCase()}`;
    if (state.matches.has(key)) return state.matches.get(key);
    const { chunks, chunk_size: size } = state.meta;
    const query = p.q.toLowerCase();
    const needed = chunks.map((_, i) => i).filter((i) => !p.failures || chunks[i][1] > 0);
    const found = [];
    for (const [done, index] of needed.entries()) {
      setStatus(`Searching: data file ${fmt(done + 1)} of ${fmt(needed.length)}\u2026`, "loading");
      const entries = await loadChunk(index);
      entries.forEach((entry, j) => {
        if (query && !entry[0].toLowerCase().includes(query)) return;
        if (p.failures && !failed(entry)) return;
        found.push(index * size + j);
      });
    }
    state.matches.set(key, found);
    return found;
  }

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

  function generations(run, gens, ticket) {
    const box = el("div", "gens");
    if (!gens) {
      box.append(el("p", "absent", `not in ${run.name}`));
      return box;
    }
    gens.forEach((gen, k) => {
      const figure = el("figure", "gen");
      if (gen.length >= 2) {
        const src = run.dirs[gen[0]] + gen[1];
        const link = el("a");
        link.href = src;
        link.target = "_blank";
        link.rel = "noopener";
        const img = el("img");
        img.loading = "lazy";
        img.decoding = "async";
        img.alt = `generation ${k + 1}`;
        watch(img, figure, src, ticket);
        img.src = src;
        link.append(img);
        figure.append(link);
      }
      const error = gen.length === 2 ? null : gen[gen.length - 1];
      if (error !== null) {
        figure.classList.add("failed");
        figure.append(el("p", "error", error));
      }
      figure.append(el("figcaption", null, error === null ? `${k + 1}` : `${k + 1} \u00b7 failed`));
      box.append(figure);
    });
    return box;
  }

  function entryNode(index, entry, ticket) {
    const article = el("article", "entry");
    if (failed(entry)) article.classList.add("has-failure");
    const prompt = el("div", "prompt");
    prompt.append(el("span", "num", `#${fmt(index + 1)}`));
    prompt.append(el("p", "text", entry[0] === "" ? "(no prompt)" : entry[0]));
    article.append(prompt);
    state.meta.runs.forEach((run, r) => article.append(generations(run, entry[r + 1], ticket)));
    return article;
  }

  async function render() {
    const ticket = ++state.render;
    const p = params();
    const meta = state.meta;
    const search = $("search");
    if (document.activeElement !== search) search.value = p.q;
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
      Object.assign(state, { images: 0, loaded: 0, broken: 0 });
      const main = $("entries");
      main.replaceChildren(
        ...wanted.map((g) => entryNode(g, state.chunks[Math.floor(g / size)][g % size], ticket)),
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
      showCounts();
      window.scrollTo(0, 0);
    } catch (error) {
      if (ticket === state.render) setStatus(`Cannot show the run: ${error.message}`, "error");
    }
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
    details.append(el("pre", null, JSON.stringify(run.config, null, 2)));
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
    document.body.classList.add(`runs-${meta.runs.length}`);
    document.title = `imagetask gallery \u00b7 ${meta.runs.map((run) => run.name).join(" vs ")}`;
  }

  function start() {
    header(state.meta);
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
    $("failures").addEventListener("change", (event) => {
      go({ failures: event.target.checked, page: 1 });
    });
    $("size").addEventListener("change", (event) => {
      go({ size: Number(event.target.value), page: 1 });
    });
    $("prev").addEventListener("click", () => go({ page: state.page - 1 }));
    $("next").addEventListener("click", () => go({ page: state.page + 1 }));
    document.addEventListener("keydown", (event) => {
      if (event.target.closest("input, select, textarea")) return;
      if (event.key === "ArrowLeft" && !$("prev").disabled) go({ page: state.page - 1 });
      if (event.key === "ArrowRight" && !$("next").disabled) go({ page: state.page + 1 });
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
  };
})();
