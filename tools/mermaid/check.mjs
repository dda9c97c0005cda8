// Parse every ```mermaid block of the given Markdown files with Mermaid itself;
// exit 1 naming each block Mermaid refuses. Run: node check.mjs FILE...
import { JSDOM } from "jsdom";
import fs from "fs";

const dom = new JSDOM("<!DOCTYPE html><body></body>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const mermaid = (await import("mermaid")).default;
mermaid.initialize({ startOnLoad: false });

let total = 0;
let bad = 0;
for (const file of process.argv.slice(2)) {
  const page = fs.readFileSync(file, "utf8");
  const blocks = [...page.matchAll(/```mermaid\n([\s\S]*?)```/g)].map((m) => m[1]);
  for (const [i, block] of blocks.entries()) {
    total++;
    try {
      await mermaid.parse(block);
    } catch (err) {
      bad++;
      console.log(`${file}: mermaid block ${i}: ${String(err).split("\n")[0]}`);
    }
  }
}
console.log(`${total} mermaid blocks, ${bad} refused`);
process.exit(bad || !total ? 1 : 0);
