// Loads the console's WebAssembly with the page's token on every request: the server refuses any
// request without it, and the browser code needs it for Halt.
const token = new URL(import.meta.url).searchParams.get("token") ?? "";
const query = "?token=" + encodeURIComponent(token);
const glue = await import("./ebb_console.js" + query);
await glue.default({ module_or_path: "./ebb_console_bg.wasm" + query });
glue.start(token);
