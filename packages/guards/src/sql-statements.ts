/**
 * Splitting an SQL script into statements, the way SQLite's `sqlite3_complete()` decides where a
 * statement ends: at a `;` outside strings, quoted identifiers and comments, except inside a
 * `CREATE TRIGGER ... BEGIN ... END` body. `exec` runs the statements one by one inside its own
 * transaction, so it can refuse, before running anything, a statement that would end that
 * transaction early (COMMIT, END, ROLLBACK, BEGIN) or cannot run in one (VACUUM).
 */

export interface SqlStatement {
  /** 0-based position in the script. */
  readonly index: number;
  /** 1-based line where the statement's first token is. */
  readonly line: number;
  /** The statement, with its terminating `;` if it had one. */
  readonly text: string;
  /** Its first words, lower case (up to three; quoted names are not words). */
  readonly words: readonly string[];
}

// Token classes and states of sqlite3_complete() (src/complete.c).
const SEMI = 0;
const WS = 1;
const OTHER = 2;
const EXPLAIN = 3;
const CREATE = 4;
const TEMP = 5;
const TRIGGER = 6;
const END = 7;
type Token =
  | typeof SEMI
  | typeof WS
  | typeof OTHER
  | typeof EXPLAIN
  | typeof CREATE
  | typeof TEMP
  | typeof TRIGGER
  | typeof END;

/** trans[state][token]; states: 0 invalid, 1 start, 2 normal, 3 explain, 4 create, 5 trigger, 6 semi, 7 end. */
const TRANSITIONS: readonly (readonly number[])[] = [
  [1, 0, 2, 3, 4, 2, 2, 2],
  [1, 1, 2, 3, 4, 2, 2, 2],
  [1, 2, 2, 2, 2, 2, 2, 2],
  [1, 3, 3, 2, 4, 2, 2, 2],
  [1, 4, 2, 2, 2, 4, 5, 2],
  [6, 5, 5, 5, 5, 5, 5, 5],
  [6, 6, 5, 5, 5, 5, 5, 7],
  [1, 7, 5, 5, 5, 5, 5, 5],
];
const START = 1;

const KEYWORDS: Readonly<Record<string, Token>> = {
  create: CREATE,
  temp: TEMP,
  temporary: TEMP,
  trigger: TRIGGER,
  explain: EXPLAIN,
  end: END,
};

function isIdChar(code: number): boolean {
  return (
    (code >= 48 && code <= 57) || // 0-9
    (code >= 65 && code <= 90) || // A-Z
    (code >= 97 && code <= 122) || // a-z
    code === 95 || // _
    code === 36 || // $
    code >= 0x80
  );
}

/** Index just past the token starting at `i`, and its class (and the word, for identifiers). */
function nextToken(sql: string, i: number): { end: number; token: Token; word?: string } {
  const c = sql[i]!;
  if (c === ";") return { end: i + 1, token: SEMI };
  if (c === " " || c === "\t" || c === "\n" || c === "\r" || c === "\f") return { end: i + 1, token: WS };
  if (c === "/" && sql[i + 1] === "*") {
    const close = sql.indexOf("*/", i + 2);
    return { end: close < 0 ? sql.length : close + 2, token: WS };
  }
  if (c === "-" && sql[i + 1] === "-") {
    const newline = sql.indexOf("\n", i + 2);
    return { end: newline < 0 ? sql.length : newline + 1, token: WS };
  }
  if (c === "[" || c === "`" || c === '"' || c === "'") {
    // Doubled quotes ('it''s') read as two adjacent strings: the same token class.
    const closer = c === "[" ? "]" : c;
    const close = sql.indexOf(closer, i + 1);
    return { end: close < 0 ? sql.length : close + 1, token: OTHER };
  }
  if (isIdChar(c.charCodeAt(0))) {
    let end = i + 1;
    while (end < sql.length && isIdChar(sql.charCodeAt(end))) end++;
    const word = sql.slice(i, end).toLowerCase();
    return { end, token: KEYWORDS[word] ?? OTHER, word };
  }
  return { end: i + 1, token: OTHER };
}

/**
 * The statements of `sql`, in order. Empty statements (`;;`, comments only) are dropped; a last
 * statement without `;` is kept.
 */
export function splitSqlStatements(sql: string): SqlStatement[] {
  const statements: SqlStatement[] = [];
  let state = 0;
  let start = 0;
  let firstToken = -1;
  let words: string[] = [];
  const emit = (end: number) => {
    if (firstToken >= 0) {
      statements.push({
        index: statements.length,
        line: lineOf(sql, firstToken),
        text: sql.slice(firstToken, end).trim(),
        words,
      });
    }
    start = end;
    firstToken = -1;
    words = [];
  };
  let i = 0;
  while (i < sql.length) {
    const { end, token, word } = nextToken(sql, i);
    if (token !== WS && token !== SEMI) {
      if (firstToken < 0) firstToken = i;
      if (words.length < 3) words.push(word ?? "");
    }
    state = TRANSITIONS[state]![token]!;
    if (token === SEMI && state === START) emit(end);
    i = end;
  }
  if (start < sql.length) emit(sql.length);
  return statements;
}

function lineOf(sql: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset; i++) if (sql.charCodeAt(i) === 10) line++;
  return line;
}

/**
 * Why `statement` cannot run inside `exec`'s transaction, or null when it can. SAVEPOINT, RELEASE
 * and ROLLBACK TO nest inside it and are fine.
 */
export function transactionConflict(statement: SqlStatement): string | null {
  const [first, second, third] = statement.words;
  switch (first) {
    case "begin":
      return "BEGIN starts a transaction, and exec already runs the whole script in one";
    case "commit":
    case "end":
      return `${first.toUpperCase()} would commit exec's transaction before the checks ran`;
    case "rollback":
      if (second === "to" || (second === "transaction" && third === "to")) return null;
      return "ROLLBACK would end exec's transaction; use SAVEPOINT / ROLLBACK TO inside the script";
    case "vacuum":
      return "VACUUM cannot run inside a transaction; run it on its own after the migration";
    default:
      return null;
  }
}
