// A small, safe Markdown renderer for chat answers: the whole text is HTML-escaped first, then a
// fixed set of constructs (headings, lists, fenced code, bold, italic, inline code, links to
// http(s) or console routes, and bracketed control ids) is turned into markup. Nothing the server
// sends can therefore become an element or attribute we did not write here. It copes with
// unfinished input (an open code fence mid-stream) because answers are rendered as they arrive.

import { escapeHtml } from './dom.js';

const ENTITY = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'" };
const unescape = (s) => s.replace(/&(amp|lt|gt|quot|#39);/g, (m) => ENTITY[m]);

/** The console route of a KB control. */
export function controlHref(id) {
  return `#/kb/controls/${encodeURIComponent(id)}`;
}

/** Inline constructs of one escaped line. `cited`: ids that become control links. */
function inline(escaped, cited) {
  // Code spans first, so nothing inside them is interpreted.
  return escaped.split(/(`[^`]*`)/).map((part) => {
    if (part.length > 1 && part.startsWith('`') && part.endsWith('`')) {
      return `<code>${part.slice(1, -1)}</code>`;
    }
    return part
      .replace(/\[([^\]]+)\]\(([^)\s]+)\)/g, (m, text, href) => {
        const raw = unescape(href);
        if (/^https?:\/\//i.test(raw)) {
          return `<a href="${href}" rel="noopener noreferrer" target="_blank">${text}</a>`;
        }
        if (raw.startsWith('#/')) return `<a href="${href}">${text}</a>`;
        return text;
      })
      .replace(/\[([^\]\s][^\]]*)\](?!\()/g, (m, id) => {
        const raw = unescape(id);
        if (!cited.has(raw)) return m;
        return `<a class="cite" href="${escapeHtml(controlHref(raw))}">${id}</a>`;
      })
      .replace(/\*\*(.+?)\*\*/g, '<strong>$1</strong>')
      .replace(/(^|[^*\w])\*(?!\s)([^*]+?)\*(?!\w)/g, '$1<em>$2</em>');
  }).join('');
}

/**
 * Markdown to an HTML string that is safe to assign to innerHTML.
 * options.citations: the answer's citations; bracketed ids among them become links.
 * Headings become h3–h6 whatever their level: an answer sits under the page's h1 and the
 * conversation's h2, and must not break the document outline.
 */
export function renderMarkdown(text, { citations = [] } = {}) {
  const cited = new Set(citations.map((c) => c.id));
  const lines = escapeHtml(text).split(/\r?\n/);
  const out = [];
  let paragraph = [];
  let list = null; // { tag, items }
  const flushParagraph = () => {
    if (paragraph.length) out.push(`<p>${paragraph.map((l) => inline(l, cited)).join(' ')}</p>`);
    paragraph = [];
  };
  const flushList = () => {
    if (list) out.push(`<${list.tag}>${list.items.map((i) => `<li>${inline(i, cited)}</li>`).join('')}</${list.tag}>`);
    list = null;
  };
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    const fence = line.match(/^\s*```\s*([\w-]*)\s*$/);
    if (fence) {
      flushParagraph();
      flushList();
      const code = [];
      i += 1;
      while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) {
        code.push(lines[i]);
        i += 1;
      }
      const lang = fence[1] ? ` data-lang="${fence[1]}"` : '';
      out.push(`<pre${lang}><code>${code.join('\n')}</code></pre>`);
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      flushParagraph();
      flushList();
      const level = Math.min(6, Math.max(3, heading[1].length));
      out.push(`<h${level} class="md-h">${inline(heading[2], cited)}</h${level}>`);
      continue;
    }
    const bullet = line.match(/^\s*[-*+]\s+(.*)$/);
    const numbered = line.match(/^\s*\d+[.)]\s+(.*)$/);
    if (bullet || numbered) {
      flushParagraph();
      const tag = bullet ? 'ul' : 'ol';
      if (list && list.tag !== tag) flushList();
      if (!list) list = { tag, items: [] };
      list.items.push((bullet || numbered)[1]);
      continue;
    }
    if (!line.trim()) {
      flushParagraph();
      flushList();
      continue;
    }
    if (list) {
      // A continuation line of the last list item.
      if (/^\s{2,}/.test(line)) {
        list.items[list.items.length - 1] += ` ${line.trim()}`;
        continue;
      }
      flushList();
    }
    paragraph.push(line);
  }
  flushParagraph();
  flushList();
  return out.join('\n');
}

/** A search snippet with its `**matched**` words as <mark>, built as DOM (no HTML parsing). */
export function snippet(text) {
  const frag = document.createDocumentFragment();
  String(text).split(/(\*\*[^*]+\*\*)/).forEach((part) => {
    if (part.startsWith('**') && part.endsWith('**') && part.length > 4) {
      const mark = document.createElement('mark');
      mark.textContent = part.slice(2, -2);
      frag.appendChild(mark);
    } else if (part) {
      frag.appendChild(document.createTextNode(part));
    }
  });
  return frag;
}
