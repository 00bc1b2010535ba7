// Chat: conversations, and answers streamed as Server-Sent Events read from fetch() (a question
// is a POST with the CSRF header, which EventSource cannot send). The answer is re-rendered as
// each `delta` arrives; a dropped connection resumes from the last event id, or, if it dropped
// before the message existed, the POST is retried with the same Idempotency-Key, which replays
// the first answer instead of asking (and billing) twice.

import { api, csrfHeaders, failure, isAbort, query, url } from './api.js';
import { confirmDialog, empty, errorBox, h, loading, plural, randomId, replace, time, toast } from './dom.js';
import { controlHref, renderMarkdown } from './markdown.js';
import { readEvents } from './sse.js';

const RESUME_ATTEMPTS = 5;

export async function render(view, ctx) {
  ctx.title('Chat');
  const conversationId = ctx.params[0] || null;
  const listBody = h('div', { 'aria-busy': 'true' }, loading('Loading conversations…'));
  const newButton = h('button', { type: 'button', class: 'button', id: 'new-conversation' }, 'New conversation');
  const aside = h('aside', { class: 'conversations', 'aria-labelledby': 'conversations-h' },
    h('div', { class: 'row' }, h('h2', { id: 'conversations-h' }, 'Conversations'), newButton), listBody);
  const thread = h('section', { class: 'thread', 'aria-labelledby': 'thread-h' });
  view.append(h('h1', null, 'Chat'),
    h('p', { class: 'lead' }, 'Ask about AWS security and compliance. Answers cite the controls of the knowledge base.'),
    h('div', { class: 'chat' }, aside, thread));

  const page = { ctx, conversationId, listBody, thread, streaming: null };

  newButton.addEventListener('click', async () => {
    newButton.disabled = true;
    try {
      const c = await api('/chat/conversations', { method: 'POST', body: {}, signal: ctx.signal });
      location.hash = `#/chat/${c.id}`;
    } catch (err) {
      if (!isAbort(err)) toast(err.detail || err.message, 'error');
      newButton.disabled = false;
    }
  });

  await Promise.all([loadList(page), loadThread(page)]);
}

async function loadList(page) {
  const { ctx, listBody } = page;
  try {
    const list = await api(`/chat/conversations${query({ limit: 50 })}`, { signal: ctx.signal });
    listBody.removeAttribute('aria-busy');
    if (!list.items.length) {
      replace(listBody, empty('No conversations yet. Ask a question to start one.'));
      return;
    }
    replace(listBody, h('ul', { class: 'conversation-list' }, list.items.map((c) => conversationItem(c, page.conversationId))));
    // A conversation without a title takes its first question's start: show it once known.
    const current = list.items.find((c) => c.id === page.conversationId);
    const heading = document.getElementById('thread-h');
    if (current && current.title && heading) heading.textContent = current.title;
  } catch (err) {
    if (isAbort(err)) return;
    listBody.removeAttribute('aria-busy');
    replace(listBody, errorBox(err, () => loadList(page)));
  }
}

function conversationItem(c, currentId) {
  return h('li', null, h('a', {
    href: `#/chat/${c.id}`,
    'aria-current': c.id === currentId ? 'page' : null,
  }, h('span', { class: 'conversation-title' }, c.title || 'Untitled conversation'),
  h('span', { class: 'muted small' }, `${plural(c.messages, 'question')} · `, time(c.updated_at))));
}

async function loadThread(page) {
  const { ctx, thread, conversationId } = page;
  const messages = h('ol', { class: 'messages', id: 'messages' });
  const heading = h('h2', { id: 'thread-h' }, conversationId ? 'Conversation' : 'New question');
  const tools = h('div', { class: 'row' }, heading);
  replace(thread, tools, messages, composer(page, messages));
  if (!conversationId) {
    messages.append(h('li', { class: 'empty' }, 'Ask a question below; a new conversation starts with it.'));
    return;
  }
  messages.append(h('li', { 'aria-busy': 'true' }, loading('Loading the conversation…')));
  try {
    const c = await api(`/chat/conversations/${encodeURIComponent(conversationId)}`, { signal: ctx.signal });
    heading.textContent = c.title || 'Untitled conversation';
    ctx.title(c.title || 'Chat');
    const del = h('button', { type: 'button', class: 'button secondary small' }, 'Delete');
    del.addEventListener('click', () => deleteConversation(c, ctx));
    tools.append(del);
    replace(messages);
    if (!c.messages.length) messages.append(h('li', { class: 'empty' }, 'No questions yet in this conversation.'));
    for (const m of c.messages) {
      const ui = messageView(m.question);
      messages.append(ui.item);
      if (m.status === 'streaming') {
        // Still being answered (another tab, or a reload mid-answer): follow it from the start.
        follow(ui, { messageId: m.id, lastId: null }, ctx.signal);
      } else {
        ui.finish(m);
      }
    }
  } catch (err) {
    if (isAbort(err)) return;
    replace(messages, h('li', null, errorBox(err, () => loadThread(page))));
  }
}

async function deleteConversation(c, ctx) {
  const ok = await confirmDialog('Delete this conversation?', `“${c.title || 'Untitled conversation'}” and its ${plural(c.messages.length, 'message')} will be deleted.`, 'Delete');
  if (!ok) return;
  try {
    await api(`/chat/conversations/${c.id}`, { method: 'DELETE', signal: ctx.signal });
    toast('Conversation deleted.');
    location.hash = '#/chat';
  } catch (err) {
    if (!isAbort(err)) toast(err.detail || err.message, 'error');
  }
}

function composer(page, messages) {
  const { ctx } = page;
  const textarea = h('textarea', { id: 'chat-question', name: 'question', rows: 3, maxlength: 4000, required: true,
    placeholder: 'e.g. What does HIPAA require for encryption at rest?', 'aria-describedby': 'chat-question-hint' });
  const ask = h('button', { type: 'submit', class: 'button', id: 'ask' }, 'Ask');
  const stop = h('button', { type: 'button', class: 'button secondary', hidden: true }, 'Stop');
  const form = h('form', { class: 'composer' },
    h('label', { for: 'chat-question' }, 'Your question'),
    textarea,
    h('p', { class: 'hint', id: 'chat-question-hint' }, 'Enter sends, Shift+Enter starts a new line.'),
    h('div', { class: 'actions' }, ask, stop));

  textarea.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener('click', () => page.streaming && page.streaming.abort());

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const question = textarea.value.trim();
    if (!question || page.streaming) return;
    ask.disabled = true;
    try {
      if (!page.conversationId) {
        const c = await api('/chat/conversations', { method: 'POST', body: {}, signal: ctx.signal });
        page.conversationId = c.id;
        // The address follows without a hashchange, which would re-render and cut the stream.
        history.replaceState(null, '', `#/chat/${c.id}`);
        replace(messages);
      }
      messages.querySelectorAll('li.empty').forEach((el) => el.remove());
      textarea.value = '';
      const ui = messageView(question);
      messages.append(ui.item);
      ui.item.scrollIntoView({ block: 'nearest' });
      const controller = new AbortController();
      const onLeave = () => controller.abort();
      ctx.signal.addEventListener('abort', onLeave);
      page.streaming = controller;
      stop.hidden = false;
      try {
        await askStreaming(page.conversationId, question, ui, controller.signal);
      } finally {
        ctx.signal.removeEventListener('abort', onLeave);
        page.streaming = null;
        stop.hidden = true;
      }
      if (!ctx.signal.aborted) loadList(page);
    } catch (err) {
      if (!isAbort(err)) toast(err.detail || err.message, 'error');
    } finally {
      ask.disabled = false;
    }
  });
  return form;
}

/** The DOM of one question and its answer, and the operations the stream applies to it. */
function messageView(question) {
  const md = h('div', { class: 'md' });
  const notices = h('div', { class: 'notices' });
  const citeList = h('ul', { class: 'citations' });
  const cites = h('div', { class: 'sources', hidden: true }, h('h3', null, 'Sources'), citeList);
  const status = h('p', { class: 'answer-status muted small', role: 'status' });
  const answer = h('div', { class: 'answer', dataset: { state: 'waiting', deltas: '0', length: '0' } }, notices, md, cites, status);
  const item = h('li', { class: 'message' },
    h('div', { class: 'question' }, h('span', { class: 'who' }, 'You'), h('p', null, question)),
    answer);
  let text = '';
  let citations = [];
  let deltas = 0;

  const draw = () => {
    md.innerHTML = renderMarkdown(text, { citations });
    answer.dataset.length = String(text.length);
  };
  const drawCitations = () => {
    cites.hidden = !citations.length;
    replace(citeList, citations.map((c) => h('li', null,
      h('a', { class: 'citation', href: controlHref(c.id) }, `${c.control_id} ${c.title}`),
      h('span', { class: 'muted small' }, ` ${frameworkLabel(c)}${c.reason ? ` — ${c.reason}` : ''}`))));
  };

  return {
    item,
    state: (s) => { answer.dataset.state = s; },
    status: (s) => { status.textContent = s; },
    reset() {
      text = '';
      citations = [];
      draw();
      drawCitations();
    },
    citation(c) {
      if (!citations.some((x) => x.id === c.id)) citations.push(c);
      drawCitations();
      draw();
    },
    delta(piece) {
      text += piece;
      deltas += 1;
      answer.dataset.deltas = String(deltas);
      draw();
    },
    notice(n) {
      notices.append(h('p', { class: 'notice info' }, n.message || n.code));
    },
    /** The stored or final state of a message (a `done` event or a Message from the API). */
    finish(m) {
      if (m.answer !== undefined) text = m.answer;
      if (m.citations) citations = m.citations;
      draw();
      drawCitations();
      const ok = !m.error && (m.status === 'complete' || m.status === undefined);
      answer.dataset.state = ok ? 'done' : (m.status || 'error');
      const parts = [];
      if (m.status === 'incomplete') parts.push('The answer was interrupted; this is what arrived.');
      if (m.error) parts.push(typeof m.error === 'string' ? `Failed: ${m.error}.` : `Failed: ${m.error.message}`);
      if (m.duration_ms) parts.push(`Answered in ${(m.duration_ms / 1000).toFixed(1)} s`);
      if (m.billing) parts.push(m.billing.billed ? 'billed as one chat question' : 'not billed');
      if (m.removed_ids && m.removed_ids.length) parts.push(`ids not in the knowledge base removed: ${m.removed_ids.join(', ')}`);
      status.textContent = parts.join(' · ');
    },
    fail(message) {
      answer.dataset.state = 'error';
      notices.append(h('p', { class: 'notice error', role: 'alert' }, message));
      status.textContent = '';
    },
  };
}

function frameworkLabel(c) {
  return `${c.framework}${c.version ? ` ${c.version}` : ''}`;
}

/** Asks a question in a conversation and streams the answer into `ui`. */
async function askStreaming(conversationId, question, ui, signal) {
  const idempotencyKey = randomId();
  const state = { messageId: null, lastId: null, ended: false };
  ui.state('streaming');
  ui.status('Answering…');
  for (let attempt = 0; !state.ended; attempt += 1) {
    try {
      let res;
      if (state.messageId) {
        // Resume: the events after the last one received, from any replica.
        const headers = { Accept: 'text/event-stream' };
        if (state.lastId !== null) headers['Last-Event-ID'] = state.lastId;
        res = await fetch(url(`/chat/messages/${state.messageId}/events`), { headers, signal, credentials: 'same-origin' });
      } else {
        res = await fetch(url(`/chat/conversations/${conversationId}/messages`), {
          method: 'POST',
          headers: {
            Accept: 'text/event-stream', 'Content-Type': 'application/json',
            'Idempotency-Key': idempotencyKey, ...csrfHeaders(),
          },
          body: JSON.stringify({ content: question }),
          signal,
          credentials: 'same-origin',
        });
        // A replayed stream starts again from its first event.
        ui.reset();
      }
      if (!res.ok) throw await failure(res);
      if (!(res.headers.get('content-type') || '').includes('text/event-stream')) {
        // Streaming is switched off on the server (CHAT_STREAMING_ENABLED=false): one JSON answer.
        const answer = await res.json();
        state.ended = true;
        ui.finish(answer);
        return;
      }
      await readEvents(res, (ev) => apply(ui, state, ev));
      if (state.ended) return;
    } catch (err) {
      if (isAbort(err)) {
        ui.finish({ status: 'incomplete' });
        ui.state('incomplete');
        throw err;
      }
      // An HTTP error answer (402 trial limit, 422…) will not get better by retrying.
      if (err.status) {
        ui.fail(err.detail || err.message);
        return;
      }
    }
    if (attempt >= RESUME_ATTEMPTS) {
      ui.fail('The connection dropped and could not be resumed. The answer so far is kept; ask again to retry.');
      return;
    }
    ui.status('Connection lost; resuming…');
    await wait(Math.min(8000, 500 * 2 ** attempt), signal);
  }
}

/** Follows an existing message's events (a message still being answered when the page loads). */
async function follow(ui, state, signal) {
  ui.state('streaming');
  ui.status('Answering…');
  state.ended = false;
  for (let attempt = 0; attempt <= RESUME_ATTEMPTS && !state.ended; attempt += 1) {
    try {
      const headers = { Accept: 'text/event-stream' };
      if (state.lastId !== null) headers['Last-Event-ID'] = state.lastId;
      const res = await fetch(url(`/chat/messages/${state.messageId}/events`), { headers, signal, credentials: 'same-origin' });
      if (!res.ok) throw await failure(res);
      await readEvents(res, (ev) => apply(ui, state, ev));
    } catch (err) {
      if (isAbort(err) || err.status) return;
      await wait(1000 * (attempt + 1), signal).catch(() => {});
    }
  }
}

function apply(ui, state, ev) {
  if (ev.id !== null && ev.id !== undefined) state.lastId = ev.id;
  const d = ev.data || {};
  switch (ev.event) {
    case 'start':
      state.messageId = d.message_id;
      break;
    case 'citation':
      ui.citation(d);
      break;
    case 'delta':
      ui.delta(d.text || '');
      break;
    case 'notice':
      ui.notice(d);
      // The model failed mid-answer: the built-in answer replaces the text so far.
      if (d.restart) ui.reset();
      break;
    case 'done':
      state.ended = true;
      ui.finish({ ...d, answer: undefined });
      break;
    case 'error':
      state.ended = true;
      ui.fail(d.message || d.code);
      break;
    default:
      break;
  }
}

function wait(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      reject(new DOMException('aborted', 'AbortError'));
    }, { once: true });
  });
}
