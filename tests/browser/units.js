// Unit tests of the console's pure modules, run inside the page by `console.py units` (the modules
// are ES modules served by the binary; there is no Node here). Returns a list of failures, empty
// when every check holds. Property checks use a seeded generator, so a failure is reproducible.
async () => {
  const failures = [];
  const check = (ok, what) => { if (!ok) failures.push(what); };
  const { renderMarkdown, snippet, controlHref } = await import('/console/markdown.js');
  const { readEvents } = await import('/console/sse.js');
  const { h, escapeHtml } = await import('/console/dom.js');

  // --- renderMarkdown: nothing the server sends becomes markup we did not write ---------------
  const ALLOWED = new Set(['P', 'H3', 'H4', 'H5', 'H6', 'UL', 'OL', 'LI', 'PRE', 'CODE', 'STRONG', 'EM', 'A']);
  const ATTRS = { A: ['href', 'class', 'rel', 'target'], PRE: ['data-lang'], H3: ['class'], H4: ['class'], H5: ['class'], H6: ['class'] };
  const safe = (html, input) => {
    const t = document.createElement('template');
    t.innerHTML = html;
    for (const el of t.content.querySelectorAll('*')) {
      if (!ALLOWED.has(el.tagName)) return `element <${el.tagName.toLowerCase()}> from ${JSON.stringify(input)}`;
      for (const a of el.attributes) {
        if (!(ATTRS[el.tagName] || []).includes(a.name)) return `attribute ${a.name} on <${el.tagName.toLowerCase()}> from ${JSON.stringify(input)}`;
      }
      if (el.tagName === 'A') {
        const href = el.getAttribute('href') || '';
        if (!/^(https?:\/\/|#\/)/i.test(href)) return `link to ${JSON.stringify(href)} from ${JSON.stringify(input)}`;
      }
    }
    return null;
  };
  const hostile = [
    '<script>alert(1)</script>',
    '<img src=x onerror=alert(1)>',
    '[x](javascript:alert(1))',
    '[x](JaVaScRiPt:alert(1))',
    '[x](https://e.example/"onmouseover="alert(1))',
    '[x](#/kb"><img src=x onerror=alert(1)>)',
    '```"><svg onload=alert(1)>\ncode\n```',
    '``` js onload=x\n<b>\n```',
    '# <iframe src=//e.example>',
    '- <a href="javascript:alert(1)">x</a>',
    '**<b>bold</b>** *<i>em</i>* `<code>`',
    '[pci-dss:8.4.2"><img src=x onerror=alert(1)>]',
    '&lt;script&gt; &amp;amp; &#39; &quot;',
  ];
  for (const input of hostile) {
    const bad = safe(renderMarkdown(input, { citations: [{ id: 'pci-dss:8.4.2' }] }), input);
    check(!bad, `hostile input: ${bad}`);
  }
  // Seeded random mixtures of Markdown and HTML pieces.
  let seed = 20261202;
  const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  const pieces = ['<', '>', '"', "'", '&', '`', '```', '*', '**', '[', ']', '(', ')', '#', '- ', '1. ', '\n', '\n\n', '  ',
    'javascript:', 'https://e.example/', '#/kb/controls/x', 'onerror=', '<img src=x ', '<script>', '</p>', 'pci-dss:8.4.2', 'text ', '&amp;', '\r\n'];
  for (let n = 0; n < 3000; n += 1) {
    let input = '';
    for (let k = rand(40); k >= 0; k -= 1) input += pieces[rand(pieces.length)];
    const bad = safe(renderMarkdown(input, { citations: [{ id: 'pci-dss:8.4.2' }] }), input);
    if (bad) { check(false, `generated input ${n}: ${bad}`); break; }
  }
  // What it is for: citations link to their KB page, other bracketed text stays text.
  const cited = document.createElement('div');
  cited.innerHTML = renderMarkdown('See [pci-dss:8.4.2] and [soc2:CC6.1].', { citations: [{ id: 'pci-dss:8.4.2' }] });
  const links = [...cited.querySelectorAll('a.cite')];
  check(links.length === 1 && links[0].getAttribute('href') === controlHref('pci-dss:8.4.2')
    && controlHref('pci-dss:8.4.2') === '#/kb/controls/pci-dss%3A8.4.2', `citation links: ${cited.innerHTML}`);
  check(cited.textContent.includes('[soc2:CC6.1]'), 'an uncited id stays as text');
  // Headings stay under the page's h1 and h2; an open fence mid-stream still renders its code.
  check(/^<h3 class="md-h">Top<\/h3>$/.test(renderMarkdown('# Top')), `h1 becomes h3: ${renderMarkdown('# Top')}`);
  check(renderMarkdown('```bash\naws s3 ls').includes('<pre data-lang="bash"><code>aws s3 ls</code></pre>'), 'an unfinished fence renders');
  const list = renderMarkdown('1. one\n2. two\n- three');
  check(list === '<ol><li>one</li><li>two</li></ol>\n<ul><li>three</li></ul>', `lists: ${list}`);

  // --- snippet and h(): text is text ----------------------------------------------------------
  const frag = snippet('a **<b>x</b>** <img src=x onerror=alert(1)>');
  const holder = document.createElement('p');
  holder.appendChild(frag);
  check(holder.querySelectorAll('mark').length === 1 && !holder.querySelector('img, b'), `snippet: ${holder.innerHTML}`);
  const el = h('span', { title: '"><x>' }, '<img src=x>');
  check(el.childElementCount === 0 && el.textContent === '<img src=x>' && el.title === '"><x>', 'h() sets text, not markup');
  check(escapeHtml(`<a href="x">'&`) === '&lt;a href=&quot;x&quot;&gt;&#39;&amp;', `escapeHtml: ${escapeHtml(`<a href="x">'&`)}`);

  // --- readEvents: the event-stream format, whatever the chunking -----------------------------
  const parse = async (chunks) => {
    const bytes = new TextEncoder();
    const body = new ReadableStream({
      start(c) { for (const ch of chunks) c.enqueue(bytes.encode(ch)); c.close(); },
    });
    const got = [];
    await readEvents(new Response(body), (e) => got.push(e));
    return got;
  };
  const stream = ': keep-alive\n\nid: 1\nevent: start\ndata: {"message_id":"m"}\n\nid: 2\r\nevent: delta\r\ndata: {"text":"a\\nb"}\r\n\r\nid: 3\rdata: plain\rdata: two\r\revent: delta\ndata: {"text":"cut"';
  const whole = await parse([stream]);
  const expected = JSON.stringify([
    { event: 'start', data: { message_id: 'm' }, id: '1' },
    { event: 'delta', data: { text: 'a\nb' }, id: '2' },
    { event: 'message', data: 'plain\ntwo', id: '3' },
  ]);
  check(JSON.stringify(whole) === expected, `events: ${JSON.stringify(whole)}`);
  // Every way of cutting the same bytes into two chunks gives the same events (a \r\n split
  // across chunks included).
  for (let at = 1; at < stream.length; at += 1) {
    const split = await parse([stream.slice(0, at), stream.slice(at)]);
    if (JSON.stringify(split) !== expected) {
      check(false, `split at ${at}: ${JSON.stringify(split)}`);
      break;
    }
  }
  const nul = await parse(['id: 1\0x\ndata: {}\n\n']);
  check(nul.length === 1 && nul[0].id === null, 'an id with NUL is ignored');
  return failures;
}
