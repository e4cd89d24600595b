// Reading a chat completions stream: Server-Sent Events over fetch()'s body.
//
// EventSource cannot POST nor send an Authorization header, hence a reader of our own.  It
// understands what the service sends: "data: <json>" events separated by blank lines (LF or
// CRLF), ending with "data: [DONE]"; comments and other fields are skipped.

/** Yield the parsed JSON of every data event of `response` until [DONE]; a body that ends
 * without it (the connection was cut) throws. */
export async function* dataEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let carriageReturn = ""; // a chunk's last "\r" may be the first half of a "\r\n"
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the stream ended without [DONE] (the connection was cut)");
      let text = carriageReturn + decoder.decode(value, { stream: true });
      carriageReturn = text.endsWith("\r") ? "\r" : "";
      if (carriageReturn) text = text.slice(0, -1);
      buffer += text.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  } finally {
    // Ended early (an error, the consumer stopped): close the body, so the connection goes.
    reader.cancel().catch(() => {});
  }
}
