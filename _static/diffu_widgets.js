/* diffu_widgets.js — draws the ipywidgets that a page embeds as a static snapshot, with no network.
 *
 * The book's pages are built by executing the chapters; myst-nb stores each widget's state in the page
 * (<script type="application/vnd.jupyter.widget-state+json">) and marks where each widget was displayed
 * (<script type="application/vnd.jupyter.widget-view+json">). The usual renderer (require.js and
 * @jupyter-widgets/html-manager) comes from a CDN, so an offline reader saw nothing there. This script is loaded
 * from the book itself instead (_config.yml: nb_ipywidgets_js) and draws each widget as it was when the page was
 * built: sliders, menus, toggles and check boxes at their values (disabled: without a kernel nothing can react),
 * progress bars, HTML, and the outputs the widget had captured (the figure of an `interact`). To move the controls,
 * open the page as a notebook (the launch button) and run it.
 *
 * Written for diffu; no third-party code. Widgets it does not know are drawn as their description and value.
 */
(function () {
  "use strict";
  if (window.diffuWidgetsLoaded) return; // myst-nb may add the script tag twice
  window.diffuWidgetsLoaded = true;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function modelId(ref) {
    return typeof ref === "string" && ref.startsWith("IPY_MODEL_") ? ref.slice("IPY_MODEL_".length) : ref;
  }

  function fmt(x, s) {
    if (typeof x !== "number") return String(x);
    const step = s.step || 0;
    const digits = step && step < 1 ? Math.min(6, Math.ceil(-Math.log10(step))) : 0;
    return s._model_name === "IntSliderModel" ? String(x) : x.toFixed(Math.max(digits, 1));
  }

  function labelled(s, control) {
    const row = el("div", "diffu-w-row");
    if (s.description) row.appendChild(el("label", "diffu-w-desc", s.description));
    row.appendChild(control);
    return row;
  }

  function slider(s, lo, hi, value, shown) {
    const input = el("input", "diffu-w-slider");
    input.type = "range";
    input.min = lo;
    input.max = hi;
    input.step = "any";
    input.value = value;
    input.disabled = true;
    const row = labelled(s, input);
    row.appendChild(el("span", "diffu-w-value", shown));
    return row;
  }

  function outputs(list) {
    const box = el("div", "diffu-w-output");
    for (const o of list || []) {
      const data = o.data || {};
      if (data["image/png"]) {
        const img = el("img");
        img.src = "data:image/png;base64," + String(data["image/png"]).trim();
        img.alt = data["text/plain"] || "figure";
        box.appendChild(img);
      } else if (data["image/svg+xml"]) {
        const div = el("div");
        div.innerHTML = data["image/svg+xml"];
        box.appendChild(div);
      } else if (data["text/html"]) {
        const div = el("div");
        div.innerHTML = Array.isArray(data["text/html"]) ? data["text/html"].join("") : data["text/html"];
        box.appendChild(div);
      } else if (o.output_type === "stream") {
        box.appendChild(el("pre", "diffu-w-pre", o.text));
      } else if (data["text/plain"]) {
        box.appendChild(el("pre", "diffu-w-pre", data["text/plain"]));
      } else if (o.output_type === "error") {
        box.appendChild(el("pre", "diffu-w-pre", o.ename + ": " + o.evalue));
      }
    }
    return box;
  }

  function render(id, state, depth) {
    const m = state[modelId(id)];
    if (!m || depth > 20) return el("span", "diffu-w-missing", "(widget not in the page's state)");
    const s = Object.assign({ _model_name: m.model_name }, m.state || {});
    const name = m.model_name;
    const kids = () => (s.children || []).map((c) => render(c, state, depth + 1));
    switch (name) {
      case "VBoxModel":
      case "BoxModel":
      case "GridBoxModel":
      case "HBoxModel": {
        const box = el("div", name === "HBoxModel" ? "diffu-w-hbox" : "diffu-w-vbox");
        kids().forEach((k) => box.appendChild(k));
        return box;
      }
      case "OutputModel":
        return outputs(s.outputs);
      case "IntSliderModel":
      case "FloatSliderModel":
        return slider(s, s.min, s.max, s.value, fmt(s.value, s));
      case "FloatLogSliderModel": {
        const base = s.base || 10;
        const exp = Math.log(s.value) / Math.log(base);
        return slider(s, s.min, s.max, exp, Number(s.value).toPrecision(3));
      }
      case "SelectionSliderModel": {
        const labels = s._options_labels || [];
        return slider(s, 0, Math.max(labels.length - 1, 0), s.index, labels[s.index]);
      }
      case "IntRangeSliderModel":
      case "FloatRangeSliderModel":
        return labelled(s, el("span", "diffu-w-value", (s.value || []).join(" – ")));
      case "DropdownModel":
      case "SelectModel": {
        const sel = el("select", "diffu-w-select");
        (s._options_labels || []).forEach((label, i) => {
          const opt = el("option", null, label);
          opt.selected = i === s.index;
          sel.appendChild(opt);
        });
        sel.disabled = true;
        return labelled(s, sel);
      }
      case "ToggleButtonsModel":
      case "RadioButtonsModel": {
        const group = el("span", "diffu-w-toggles");
        (s._options_labels || []).forEach((label, i) => {
          group.appendChild(el("span", i === s.index ? "diffu-w-toggle diffu-w-on" : "diffu-w-toggle", label));
        });
        return labelled(s, group);
      }
      case "CheckboxModel":
      case "ToggleButtonModel": {
        const box = el("input");
        box.type = "checkbox";
        box.checked = !!s.value;
        box.disabled = true;
        return labelled(s, box);
      }
      case "FloatProgressModel":
      case "IntProgressModel": {
        const bar = el("progress", "diffu-w-progress");
        bar.max = s.max - s.min || 1;
        bar.value = s.value - s.min;
        return labelled(s, bar);
      }
      case "HTMLModel":
      case "HTMLMathModel": {
        const span = el("span", "diffu-w-html");
        span.innerHTML = s.value || "";
        return labelled(s, span);
      }
      case "LabelModel":
      case "TextModel":
      case "TextareaModel":
      case "IntTextModel":
      case "FloatTextModel":
      case "BoundedIntTextModel":
      case "BoundedFloatTextModel":
        return labelled(s, el("span", "diffu-w-text", s.value));
      case "ButtonModel":
        return el("button", "diffu-w-button", s.description || "button");
      default:
        return labelled(s, el("span", "diffu-w-value", s.value === undefined ? "" : JSON.stringify(s.value)));
    }
  }

  function run() {
    const stateTag = document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]');
    if (!stateTag) return;
    let state;
    try {
      state = JSON.parse(stateTag.textContent).state || {};
    } catch (err) {
      console.error("diffu_widgets: unreadable widget state", err);
      return;
    }
    document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').forEach((tag) => {
      let view;
      try {
        view = JSON.parse(tag.textContent);
      } catch (err) {
        return;
      }
      const root = el("div", "diffu-widget");
      root.dataset.modelId = view.model_id;
      root.appendChild(render(view.model_id, state, 0));
      const hasControls = root.querySelector("input, select, .diffu-w-toggles");
      if (hasControls) {
        root.appendChild(el("div", "diffu-w-note",
          "A snapshot of the controls as the book was built. Open this page as a notebook (launch button) to move them."));
      }
      tag.parentNode.insertBefore(root, tag);
    });
  }

  const css = `
    .diffu-widget { margin: 0.5em 0; }
    .diffu-w-vbox { display: flex; flex-direction: column; gap: 2px; }
    .diffu-w-hbox { display: flex; flex-direction: row; align-items: center; gap: 8px; }
    .diffu-w-row { display: flex; align-items: center; gap: 8px; font-size: 0.9em; }
    .diffu-w-desc { min-width: 8em; text-align: right; color: #333; }
    .diffu-w-slider { width: 16em; }
    .diffu-w-value { font-family: monospace; }
    .diffu-w-toggle { border: 1px solid #bbb; padding: 1px 8px; margin-right: 2px; border-radius: 3px; color: #555; }
    .diffu-w-on { background: #dbe8f7; border-color: #5b8fd1; color: #123; }
    .diffu-w-output img { max-width: 100%; height: auto; }
    .diffu-w-pre { font-size: 0.85em; margin: 0; white-space: pre-wrap; }
    .diffu-w-note { font-size: 0.8em; color: #777; font-style: italic; }
  `;
  const style = document.createElement("style");
  style.textContent = css;
  document.head.appendChild(style);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run);
  else run();
})();
