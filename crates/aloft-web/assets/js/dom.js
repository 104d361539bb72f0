// Building the page from elements and text nodes only: no HTML strings
// anywhere, so nothing a device reports (ids, attributes, event details)
// can become markup. The Content-Security-Policy enforces it with Trusted
// Types.

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(el, props) {
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.setAttribute('class', value);
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'on') {
      for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    } else if (key === 'value') el.value = value;
    else if (key === 'checked') el.checked = Boolean(value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: `h('a', { href: '#/x', class: 'c' }, 'text', otherNode)`. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  append(el, children);
  return el;
}

/** An SVG element, the same way. */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, props);
  append(el, children);
  return el;
}

/** How to find an element again once redrawn: its id, control or link. */
function focusKey(el) {
  for (const name of ['id', 'data-action', 'href', 'name']) {
    const v = el.getAttribute(name);
    if (v) return `${el.localName}[${name}="${CSS.escape(v)}"]`;
  }
  return null;
}

/**
 * Replaces the children of `el`. When the focus was inside, it moves to
 * the same control in what replaced it (pages redraw as events arrive,
 * which must not throw a keyboard user back to the top).
 */
export function replace(el, ...children) {
  const had = document.activeElement;
  const key = had && had !== el && el.contains(had) ? focusKey(had) : null;
  el.replaceChildren();
  append(el, children);
  if (key && !had.isConnected) el.querySelector(key)?.focus({ preventScroll: true });
  return el;
}

/** A table in a box that scrolls sideways on narrow screens. */
export function table(headers, rows, props = {}) {
  const head = h('tr', {}, headers.map((c) => {
    const [label, cls] = Array.isArray(c) ? c : [c, undefined];
    return h('th', { scope: 'col', class: cls }, label);
  }));
  return h('div', { class: 'table-wrap' },
    h('table', props, h('thead', {}, head), h('tbody', {}, rows)));
}

/** Runs `fn` at most once per `ms`, the last call winning (trailing edge). */
export function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  return (...args) => {
    const wait = Math.max(0, last + ms - Date.now());
    clearTimeout(timer);
    timer = setTimeout(() => { last = Date.now(); fn(...args); }, wait);
  };
}

/** A heading that receives focus when its page opens. */
export function pageTitle(text, ...extra) {
  return h('h1', { tabindex: '-1' }, text, ...extra);
}

/** Focuses the page heading (keyboard and screen-reader users land on it). */
export function focusTitle(root) {
  const title = root.querySelector('h1');
  if (title) title.focus({ preventScroll: true });
}
