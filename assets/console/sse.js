// Server-Sent Events over fetch(): EventSource cannot POST a question or send the CSRF header,
// so the chat reads the response body as a stream and parses the event-stream format itself
// (WHATWG HTML §9.2.6: fields `event`, `data`, `id`, comments starting with `:`, any line end).

/**
 * Reads `response.body` and calls onEvent({event, data, id}) for each dispatched event, `data`
 * parsed as JSON when it is JSON. Resolves when the stream ends; rejects if the connection drops
 * (a TypeError from the reader) or the signal aborts.
 */
export async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = { event: '', data: [], id: null };
  const dispatch = () => {
    if (event.data.length) {
      const text = event.data.join('\n');
      let data = text;
      try {
        data = JSON.parse(text);
      } catch {
        // Not JSON: hand over the text as it is.
      }
      onEvent({ event: event.event || 'message', data, id: event.id });
    }
    event = { event: '', data: [], id: null };
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    // Complete lines only; the rest waits for the next chunk. A lone \r at the very end may be
    // the first half of \r\n, so it waits too.
    let match;
    const lineEnd = /\r\n|\r(?!$)|\n/g;
    let start = 0;
    while ((match = lineEnd.exec(buffer)) !== null) {
      const line = buffer.slice(start, match.index);
      start = match.index + match[0].length;
      if (line === '') {
        dispatch();
        continue;
      }
      if (line.startsWith(':')) continue; // comment: the server's keep-alive
      const colon = line.indexOf(':');
      const name = colon === -1 ? line : line.slice(0, colon);
      let val = colon === -1 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (name === 'event') event.event = val;
      else if (name === 'data') event.data.push(val);
      else if (name === 'id' && !val.includes('\0')) event.id = val;
    }
    buffer = buffer.slice(start);
  }
  // A final event without its blank line is incomplete by the spec: dropped.
}
