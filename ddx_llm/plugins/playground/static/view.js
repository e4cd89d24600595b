// DOM and formatting helpers.  Text always goes in as text (textContent), never as HTML:
// answers and error messages come from a model and from the network.

/** Create an element: `el("td", {className: "x", dataset: {id: "m"}}, "text", child)`. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (value !== undefined && value !== null) node[name] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function byId(id) {
  return document.getElementById(id);
}

/** "850 ms", "2.4 s" */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

/** "12.3 tokens/s" */
export function rate(tokens, ms) {
  if (!tokens || !ms || ms <= 0) return "–";
  return `${((tokens * 1000) / ms).toFixed(1)} tokens/s`;
}

/** "4.02 B", "135 M" */
export function params(billions) {
  if (typeof billions !== "number") return "–";
  return billions >= 1 ? `${billions.toFixed(2)} B` : `${Math.round(billions * 1000)} M`;
}

/** "262k", "8k", "512" */
export function tokensCount(count) {
  if (typeof count !== "number") return "–";
  return count >= 1024 ? `${Math.round(count / 1024)}k` : String(count);
}

/** "45 %" */
export function percent(fraction) {
  return `${Math.round(fraction * 100)} %`;
}
