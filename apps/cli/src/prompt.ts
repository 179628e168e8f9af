/** Asking a person, only when there is one: never waits on a non-TTY stdin. */
import { createInterface } from "node:readline/promises";

export function canAsk(): boolean {
  return Boolean(process.stdin.isTTY && process.stderr.isTTY);
}

export async function ask(question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await rl.question(`${question} `);
  } finally {
    rl.close();
  }
}
