/**
 * Database fixtures: realistic SQLite databases of a chosen size, generated deterministically from
 * a seed, plus helpers that compare databases by logical content rather than by bytes.
 */
import { createCipheriv, createHash, randomBytes } from "node:crypto";
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  fsyncSync,
  openSync,
  renameSync,
  rmSync,
  statSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import Database from "better-sqlite3";
import { createRandom, hashDatabaseContent, type Random } from "./workload.js";

export {
  createRandom,
  DEFAULT_WORKLOAD_WEIGHTS,
  type Random,
  runWorkload,
  startWriterProcess,
  WORKLOAD_KINDS,
  type WorkloadKind,
  type WorkloadOptions,
  type WorkloadRecord,
  type WorkloadWeights,
  type WriterExit,
  type WriterProcess,
  type WriterProcessOptions,
  type WriterRecord,
  writerProcessScript,
} from "./workload.js";

export interface FixtureDatabaseOptions {
  /** Where to create the database. Must not exist yet (nor its -wal, -shm or -journal). */
  path: string;
  /** Target size in MiB (1024 * 1024 bytes); the result lands within a few percent above it. */
  sizeMB: number;
  /** PRNG seed (default 1). The same seed and options give the same content. */
  seed?: number;
  /** Journal mode the finished database is left in (default "wal"). */
  journalMode?: "wal" | "delete";
  /** Page size in bytes: a power of two from 512 to 65536 (default 4096). */
  pageSize?: number;
}

export interface FixtureSummary {
  path: string;
  seed: number;
  journalMode: "wal" | "delete";
  pageSize: number;
  pageCount: number;
  /** Size of the database file in bytes (pageSize * pageCount). */
  bytes: number;
  /** `PRAGMA user_version` of the fixture. */
  userVersion: number;
  /** Row count of every table (see `tableRowCounts`). */
  tables: Record<string, number>;
  /** Generation time in milliseconds. */
  elapsedMs: number;
}

/** `PRAGMA user_version` of every fixture database: the version of the schema below. */
export const FIXTURE_USER_VERSION = 7;

/** The table with awkward identifiers (spaces, double quotes, a comma); its columns include SQL keywords. */
export const FIXTURE_ODD_TABLE = 'odd "names", here';

const ODD = `"${FIXTURE_ODD_TABLE.replaceAll('"', '""')}"`;

const SCHEMA = `
CREATE TABLE users (
  id INTEGER PRIMARY KEY,
  email TEXT NOT NULL,
  name TEXT NOT NULL,
  bio TEXT,
  country TEXT,
  balance REAL,
  karma INTEGER,
  created_at TEXT NOT NULL,
  avatar BLOB
);
CREATE UNIQUE INDEX users_email ON users (email);
CREATE TRIGGER users_email_not_empty BEFORE INSERT ON users WHEN NEW.email = ''
BEGIN SELECT RAISE(ABORT, 'email must not be empty'); END;
CREATE TABLE orders (
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  status TEXT NOT NULL,
  total_cents INTEGER NOT NULL,
  currency TEXT NOT NULL,
  note TEXT,
  placed_at TEXT NOT NULL
);
CREATE INDEX orders_user_placed ON orders (user_id, placed_at);
CREATE TABLE order_items (
  order_id INTEGER NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
  line INTEGER NOT NULL,
  sku TEXT NOT NULL,
  quantity INTEGER NOT NULL,
  unit_price REAL NOT NULL,
  PRIMARY KEY (order_id, line)
) WITHOUT ROWID;
CREATE TABLE events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id INTEGER REFERENCES users (id),
  kind TEXT NOT NULL,
  payload TEXT NOT NULL,
  at INTEGER NOT NULL
);
CREATE INDEX events_kind_at ON events (kind, at);
CREATE TABLE documents (
  id INTEGER PRIMARY KEY,
  owner_id INTEGER REFERENCES users (id),
  title TEXT NOT NULL,
  mime TEXT NOT NULL,
  body TEXT,
  content BLOB
);
CREATE TABLE edge_values (
  id INTEGER PRIMARY KEY,
  label TEXT NOT NULL UNIQUE,
  value
);
CREATE TABLE ${ODD} (
  "order" INTEGER PRIMARY KEY,
  "select" TEXT,
  "column with spaces" TEXT,
  "it's" REAL,
  "naïve ✓" BLOB
);
CREATE INDEX "odd index ""1""" ON ${ODD} ("select", "column with spaces");
CREATE VIEW order_totals AS
  SELECT o.id AS order_id, o.user_id, count(i.line) AS lines, sum(i.quantity * i.unit_price) AS total
  FROM orders o LEFT JOIN order_items i ON i.order_id = o.id GROUP BY o.id;
`;

// biome-ignore format: word lists read better packed
const FIRST_NAMES = [
  "Olivia", "Liam", "José", "Zoë", "Søren", "Mária", "Łukasz", "Ngozi", "Mateo", "Amélie", "Björn", "Renée",
  "Иван", "Мария", "Αλέξανδρος", "Δήμητρα", "محمد", "فاطمة", "דוד", "שרה", "李娜", "王伟", "さくら", "ひろし",
  "민준", "서연", "अर्जुन", "प्रिया", "Thảo", "Zoe\u0308", "Rene\u0301e", "Ana", "Noah", "Emma", "Kwame", "Aroha",
] as const;
// biome-ignore format: word lists read better packed
const LAST_NAMES = [
  "Smith", "García", "Müller", "Nguyễn", "Kowalski", "O'Brien", "Okafor", "Johansson", "Ivanova", "Papadopoulos",
  "Al-Sayed", "Cohen", "Wang", "Tanaka", "Kim", "Sharma", "Da Silva", "Dubois", "Rossi", "Øvergård", "Ṭāhā",
  "van der Berg", "Nuñez", "Brontë", "Schröder", "Ōta", "Lee", "Brown", "Jones", "Müller-Lüdenscheidt",
] as const;
// biome-ignore format: word lists read better packed
const WORDS = [
  "account", "backup", "invoice", "shipment", "customer", "payment", "refund", "delivery", "warehouse", "report",
  "quarter", "budget", "review", "meeting", "release", "feature", "request", "support", "ticket", "update",
  "the", "a", "of", "and", "to", "in", "for", "with", "on", "by", "from", "is", "was", "will", "be", "not",
  "quickly", "carefully", "new", "old", "final", "draft", "urgent", "pending", "approved", "rejected", "late",
  "café", "naïve", "façade", "straße", "über", "déjà", "vu", "smörgåsbord", "jalapeño", "piñata", "résumé",
  "данные", "резервная", "копия", "δεδομένα", "αντίγραφο", "データ", "バックアップ", "数据", "备份", "데이터",
  "بيانات", "נתונים", "डेटा", "🚀", "✅", "📦", "👩‍💻", "🇳🇴", "e\u0301", "n\u0303", "—", "…", "€", "½",
] as const;
const COUNTRIES = ["NO", "DE", "US", "JP", "BR", "IN", "NG", "FR", "GR", "IL", "KR", "VN", "PL", "NZ", null] as const;
const STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled", "refunded"] as const;
const CURRENCIES = ["EUR", "USD", "NOK", "JPY", "BRL"] as const;
const EVENT_KINDS = [
  "login",
  "logout",
  "view",
  "search",
  "add_to_cart",
  "checkout",
  "error",
  "password_reset",
] as const;
const AGENTS = [
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
  "curl/8.8.0",
  "okhttp/4.12.0",
] as const;
const TRICKY_NOTES = [
  'Customer said "leave it at the door", then called back',
  "Line one\nLine two, with a comma\r\nLine three (CRLF)",
  "It's a 'single-quoted' note; with a semicolon",
  'Tabs\tand\ttabs, commas, "quotes" and \\backslashes\\',
  "",
] as const;
const MIMES = ["image/png", "application/json", "application/octet-stream"] as const;

const BASE_TIME = Date.UTC(2019, 0, 1);
const INT64_MAX = 9223372036854775807n;
const INT64_MIN = -9223372036854775808n;

function invalid(message: string, hint: string): LifeboatError {
  return new LifeboatError(ErrorCodes.INVALID_ARGUMENT, message, { plugin: "testkit", operation: "fixture", hint });
}

/** Writes the rows of one fixture; all randomness comes from `random` and a keystream, both seeded. */
class FixtureWriter {
  private readonly keystream;
  private readonly zeros = Buffer.alloc(1 << 20);
  private readonly paragraphs: string[] = [];
  private userId = 0;
  private orderId = 0;
  private documentId = 0;
  private clock = BASE_TIME;
  private readonly maxBlob: number;
  private readonly statements;

  constructor(
    db: Database.Database,
    private readonly random: Random,
    seed: number,
    private readonly pageSize: number,
    targetBytes: number,
  ) {
    // AES-CTR over zeros is a fast, seeded stream of incompressible bytes for "binary" BLOBs.
    const key = createHash("sha256").update(`lifeboat-fixture:${seed}`).digest();
    this.keystream = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
    // Keep single documents small relative to the target so the final size stays close to it.
    this.maxBlob = Math.max(2 * pageSize + 1, Math.min(256 * 1024, Math.floor(targetBytes / 40)));
    for (let i = 0; i < 400; i++) this.paragraphs.push(this.sentences(random.int(2, 9)));
    this.statements = {
      user: db.prepare(
        "INSERT INTO users (id, email, name, bio, country, balance, karma, created_at, avatar) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      ),
      order: db.prepare(
        "INSERT INTO orders (id, user_id, status, total_cents, currency, note, placed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
      ),
      item: db.prepare("INSERT INTO order_items (order_id, line, sku, quantity, unit_price) VALUES (?, ?, ?, ?, ?)"),
      event: db.prepare("INSERT INTO events (user_id, kind, payload, at) VALUES (?, ?, ?, ?)"),
      document: db.prepare(
        "INSERT INTO documents (id, owner_id, title, mime, body, content) VALUES (?, ?, ?, ?, ?, ?)",
      ),
      edge: db.prepare("INSERT INTO edge_values (label, value) VALUES (?, ?)"),
      odd: db.prepare(
        `INSERT INTO ${ODD} ("order", "select", "column with spaces", "it's", "naïve ✓") VALUES (?, ?, ?, ?, ?)`,
      ),
    };
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let done = 0; done < n; ) {
      const step = Math.min(n - done, this.zeros.length);
      this.keystream.update(this.zeros.subarray(0, step)).copy(out, done);
      done += step;
    }
    return out;
  }

  words(n: number): string {
    const parts: string[] = [];
    for (let i = 0; i < n; i++) parts.push(this.random.pick(WORDS));
    return parts.join(" ");
  }

  sentences(n: number): string {
    const parts: string[] = [];
    for (let i = 0; i < n; i++) {
      const s = this.words(this.random.int(4, 18));
      parts.push(`${s.charAt(0).toUpperCase()}${s.slice(1)}${this.random.chance(0.1) ? "!" : "."}`);
    }
    return parts.join(" ");
  }

  /** Rows with the values that break naive backup, export and compare code. */
  writeEdgeCases(): void {
    const s = this.statements;
    const users: Array<[string, string | null, number, bigint, Buffer | null]> = [
      ["Zoë Ünïcødé 李娜 🚀", null, 0.1, INT64_MAX, null],
      ["Empty Bio", "", -0, INT64_MIN, Buffer.alloc(0)],
      ['Quote "Mc\'Quote", Jr.', "line1\nline2, \"quoted\", 'single'\r\nCRLF", 1e308, 9007199254740993n, null],
      [
        "Rene\u0301e O\u0308zil",
        "👩‍💻🇳🇴 mixed עברית العربية Ελληνικά русский 日本語",
        5e-324,
        -9007199254740993n,
        null,
      ],
      ["Big Avatar", "tab\tseparated\tbio", -1e308, -1n, this.bytes(this.pageSize * 3 + 17)],
    ];
    for (const [name, bio, balance, karma, avatar] of users) {
      const id = ++this.userId;
      const created = new Date(BASE_TIME + id * 1000).toISOString();
      s.user.run(id, `edge${id}@example.com`, name, bio, "NO", balance, karma, created, avatar);
    }
    const edges: Array<[string, unknown]> = [
      ["null", null],
      ["empty text", ""],
      ["integer zero", 0n],
      ["real zero", 0],
      ["real negative zero", -0],
      ["real one tenth", 0.1],
      ["real 1e308", 1e308],
      ["real -1e308", -1e308],
      ["real smallest subnormal", 5e-324],
      ["real 2^53", 2 ** 53],
      ["int64 max", INT64_MAX],
      ["int64 min", INT64_MIN],
      ["2^53 + 1", 9007199254740993n],
      ["-(2^53 + 1)", -9007199254740993n],
      ["text zero", "0"],
      ["text NULL", "NULL"],
      ["text spaces", "   "],
      ["empty blob", Buffer.alloc(0)],
      ["blob with NUL bytes", Buffer.from([0, 1, 2, 0, 255, 0])],
      ["blob larger than a page", this.bytes(this.pageSize * 2 + 123)],
      ["blob 64 KiB + 1", this.bytes(65537)],
      ["text larger than a page", "lorem ipsum ".repeat(Math.ceil((this.pageSize * 3) / 12))],
      ["unicode scripts", "Ελληνικά русский עברית العربية हिन्दी 中文 日本語 한국어 ไทย"],
      ["emoji", "🚀👩‍💻🇳🇴👍🏽 🏳️‍🌈"],
      ["combining characters", "e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353"],
      ["byte order mark", "\uFEFFstarts with a BOM"],
      ["quotes and commas", 'she said "hi, there", it\'s fine'],
      ["newlines", "a\nb\r\nc\rd"],
      ["csv-like", 'a,b,"c ""quoted""",d\n1,2,3,4'],
      ["sql-like", "'; DROP TABLE users; --"],
    ];
    for (const [label, value] of edges) s.edge.run(label, value);
    const odd: Array<[bigint, string | null, string, number | null, Buffer | null]> = [
      [1n, "from", "value with spaces", 0.5, null],
      [2n, null, "", -0.25, Buffer.from("naïve ✓", "utf8")],
      [3n, "group by", 'has "quotes"', null, Buffer.alloc(0)],
      [INT64_MAX, "where", "largest key", 1e-300, this.bytes(32)],
      [-5n, "", "negative key", 42, null],
    ];
    for (const row of odd) s.odd.run(...row);
    // Documents whose content needs overflow pages, whatever the page size.
    this.document(this.userId, "image/png", this.pageSize * 4 + 1);
    this.document(1, "application/json", 70_000);
  }

  /** One user with orders, order items, events and sometimes a document. */
  writeUnit(): void {
    const r = this.random;
    const s = this.statements;
    const id = ++this.userId;
    this.clock += r.int(1_000, 600_000);
    const first = r.pick(FIRST_NAMES);
    const last = r.pick(LAST_NAMES);
    const bio = r.chance(0.25)
      ? null
      : r.chance(0.07)
        ? ""
        : r.chance(0.05)
          ? r.pick(TRICKY_NOTES)
          : this.sentences(r.int(1, 3));
    const karma = r.chance(0.01) ? 9007199254740992n + BigInt(r.uint32()) : r.int(-50, 5000);
    const balance = r.chance(0.05) ? 0.1 : Math.round(r.float() * 1e6) / 100;
    s.user.run(
      id,
      `user${id}.${r.uint32().toString(36)}@example.${r.pick(["com", "org", "no", "jp"])}`,
      `${first} ${last}`,
      bio,
      r.pick(COUNTRIES),
      balance,
      karma,
      new Date(this.clock).toISOString(),
      r.chance(0.3) ? this.bytes(r.int(64, 1500)) : null,
    );
    const orders = r.int(0, 6);
    for (let o = 0; o < orders; o++) {
      const orderId = ++this.orderId;
      const lines = r.int(1, 6);
      let total = 0;
      for (let line = 1; line <= lines; line++) {
        const quantity = r.int(1, 12);
        const price = Math.round(r.float() * 50000) / 100;
        total += quantity * price;
        s.item.run(
          orderId,
          line,
          `SKU-${r.int(1000, 99999)}-${r.pick(["RED", "BLU", "GRN", "XL", "M"])}`,
          quantity,
          price,
        );
      }
      s.order.run(
        orderId,
        id,
        r.pick(STATUSES),
        Math.round(total * 100),
        r.pick(CURRENCIES),
        r.chance(0.8) ? null : r.chance(0.5) ? r.pick(TRICKY_NOTES) : this.words(r.int(3, 12)),
        new Date(this.clock + r.int(0, 30 * 86_400_000)).toISOString(),
      );
    }
    const events = r.int(1, 8);
    for (let e = 0; e < events; e++) {
      const kind = r.pick(EVENT_KINDS);
      const payload = JSON.stringify({
        ip: `10.${r.int(0, 255)}.${r.int(0, 255)}.${r.int(1, 254)}`,
        agent: r.pick(AGENTS),
        path: `/${r.pick(["app", "api", "shop"])}/${r.pick(WORDS)}`,
        ms: r.int(1, 2500),
        ok: kind !== "error",
      });
      s.event.run(r.chance(0.05) ? null : id, kind, payload, this.clock + r.int(0, 86_400_000));
    }
    if (r.chance(0.08)) {
      const mime = r.pick(MIMES);
      this.document(
        id,
        mime,
        r.chance(0.1) ? -1 : Math.floor(Math.exp(Math.log(64) + r.float() * Math.log(this.maxBlob / 64))),
      );
    }
  }

  /** A document whose content is `size` bytes of `mime`-like data (size -1: NULL content). */
  private document(ownerId: number, mime: (typeof MIMES)[number], size: number): void {
    const r = this.random;
    const id = ++this.documentId;
    const parts = [`# ${this.words(r.int(2, 6))} ${id}`];
    const paragraphs = r.int(0, 8);
    for (let i = 0; i < paragraphs; i++) parts.push(r.pick(this.paragraphs));
    const body = paragraphs === 0 ? (r.chance(0.5) ? null : "") : parts.join("\n\n");
    let content: Buffer | null = null;
    if (size >= 0) {
      if (mime === "image/png") {
        content = this.bytes(size);
        if (size >= 8) Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(content);
      } else if (mime === "application/json") {
        const json: string[] = [];
        let length = 2;
        while (length < size) {
          const item = JSON.stringify({ id: r.uint32(), tag: r.pick(WORDS), value: r.int(0, 1e6) / 100 });
          json.push(item);
          length += item.length + 1;
        }
        content = Buffer.from(`[${json.join(",")}]`, "utf8").subarray(0, size);
      } else {
        // A slowly varying sensor series: compresses somewhat, like real measurements.
        const samples = new Float64Array(Math.ceil(size / 8));
        let v = r.float() * 100;
        for (let i = 0; i < samples.length; i++) {
          v += (r.float() - 0.5) * 0.1;
          samples[i] = Math.round(v * 1000) / 1000;
        }
        content = Buffer.from(samples.buffer, 0, size);
      }
    }
    this.statements.document.run(id, ownerId, this.words(r.int(2, 7)), mime, body, content);
  }
}

function fsyncPath(path: string, flags: "r" | "r+"): void {
  const fd = openSync(path, flags);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Creates a realistic SQLite database of about `sizeMB` MiB at `path`, deterministically from
 * `seed`: users (unique email index, trigger), orders (composite index, foreign key), order_items
 * (WITHOUT ROWID), events (AUTOINCREMENT, JSON text), documents (text bodies and BLOBs of varied
 * size, some spanning overflow pages), edge_values (NULL vs '' vs 0 vs 0.0 vs -0.0 vs x'', int64
 * extremes, 1e308, subnormals, multi-script unicode, emoji, combining marks, quotes, commas,
 * newlines), a table and index with odd quoted names and keyword columns, a view, and
 * `PRAGMA user_version = FIXTURE_USER_VERSION`. Generation runs with journal_mode=OFF and
 * synchronous=OFF into a temp file in the same directory, which is then switched to
 * `journalMode`, fsynced and renamed into place (a crash leaves no half-built file at `path`).
 * Memory use does not grow with `sizeMB`. Throws LifeboatError INVALID_ARGUMENT for bad options
 * or an existing `path`.
 */
export async function createFixtureDatabase(options: FixtureDatabaseOptions): Promise<FixtureSummary> {
  const started = performance.now();
  const { path } = options;
  const seed = options.seed ?? 1;
  const journalMode = options.journalMode ?? "wal";
  const pageSize = options.pageSize ?? 4096;
  if (!(Number.isFinite(options.sizeMB) && options.sizeMB > 0)) {
    throw invalid(`Fixture sizeMB must be a number above 0, got ${options.sizeMB}.`, "Pass the size in MiB, e.g. 5.");
  }
  if (!Number.isSafeInteger(seed)) throw invalid(`Fixture seed must be a safe integer, got ${seed}.`, "Use e.g. 1.");
  if (journalMode !== "wal" && journalMode !== "delete") {
    throw invalid(`Fixture journalMode must be "wal" or "delete", got ${String(journalMode)}.`, 'Use "wal".');
  }
  if (!Number.isInteger(pageSize) || pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) {
    throw invalid(`Fixture pageSize must be a power of two from 512 to 65536, got ${pageSize}.`, "Use 4096.");
  }
  if (!existsSync(dirname(path))) {
    throw invalid(
      `Cannot create a fixture database at ${path}: ${dirname(path)} does not exist.`,
      "Create the directory first.",
    );
  }
  for (const suffix of ["", "-wal", "-shm", "-journal"]) {
    if (existsSync(path + suffix)) {
      throw invalid(
        `Cannot create a fixture database at ${path}: ${path + suffix} already exists.`,
        "Pass a path in a fresh temporary directory; fixtures never overwrite files.",
      );
    }
  }
  const targetBytes = Math.round(options.sizeMB * 1024 * 1024);
  const temp = join(dirname(path), `.${basename(path)}.fixture-${process.pid}-${randomBytes(4).toString("hex")}.tmp`);
  let db: Database.Database | undefined;
  let pageCount: number;
  let tables: Record<string, number>;
  try {
    db = new Database(temp);
    db.pragma(`page_size = ${pageSize}`);
    db.pragma("journal_mode = OFF");
    db.pragma("synchronous = OFF");
    db.pragma("cache_size = -65536"); // 64 MiB, whatever the database size
    db.pragma("temp_store = MEMORY");
    // better-sqlite3 turns foreign keys on; the generator keeps them consistent itself (tests check).
    db.pragma("foreign_keys = OFF");
    db.exec(SCHEMA);
    const writer = new FixtureWriter(db, createRandom(seed), seed, pageSize, targetBytes);
    const pages = db.prepare("PRAGMA page_count").pluck();
    const full = (): boolean => (pages.get() as number) * pageSize >= targetBytes;
    db.exec("BEGIN");
    writer.writeEdgeCases();
    db.exec("COMMIT");
    while (!full()) {
      db.exec("BEGIN");
      for (let i = 0; i < 2000 && !full(); i++) writer.writeUnit();
      db.exec("COMMIT");
      await yieldToEventLoop(); // generation of big fixtures must not starve timers in the caller
    }
    db.pragma(`user_version = ${FIXTURE_USER_VERSION}`);
    db.pragma("synchronous = FULL");
    const mode = db.pragma(`journal_mode = ${journalMode.toUpperCase()}`, { simple: true });
    if (String(mode).toLowerCase() !== journalMode) {
      throw new LifeboatError(ErrorCodes.INTERNAL, `Could not switch fixture ${temp} to journal_mode ${journalMode}.`, {
        plugin: "testkit",
        operation: "fixture",
        hint: "WAL needs a file system with shared-memory support; use journalMode 'delete' on this one.",
      });
    }
    pageCount = pages.get() as number;
    tables = tableRowCounts(db);
    db.close();
    db = undefined;
    fsyncPath(temp, "r+");
    renameSync(temp, path);
    fsyncPath(dirname(path), "r");
  } catch (error) {
    db?.close();
    for (const suffix of ["", "-wal", "-shm", "-journal"]) rmSync(temp + suffix, { force: true });
    if (error instanceof LifeboatError) throw error;
    throw new LifeboatError(ErrorCodes.INTERNAL, `Could not generate the fixture database ${path}: ${String(error)}`, {
      plugin: "testkit",
      operation: "fixture",
      cause: error,
      hint: "Check that the directory exists, is writable and has room for the requested size.",
    });
  }
  return {
    path,
    seed,
    journalMode,
    pageSize,
    pageCount,
    bytes: statSync(path).size,
    userVersion: FIXTURE_USER_VERSION,
    tables,
    elapsedMs: Math.round(performance.now() - started),
  };
}

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    accessSync(dirname(path), constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function openForReading<T>(
  source: string | Database.Database,
  operation: string,
  read: (db: Database.Database) => T,
): T {
  if (typeof source !== "string") return read(source);
  if (!existsSync(source)) {
    throw new LifeboatError(ErrorCodes.DATABASE_NOT_FOUND, `Database ${source} does not exist.`, {
      plugin: "testkit",
      operation,
      hint: "Check the path; fixtures and workloads create their databases in a temporary directory.",
    });
  }
  let db: Database.Database | undefined;
  try {
    // Read-write when allowed (nothing is written), so that closing the last connection removes the
    // -wal/-shm files as any SQLite client does; a read-only connection would leave them behind.
    db = new Database(source, { readonly: !writable(source), fileMustExist: true });
    return read(db);
  } catch (error) {
    if (error instanceof LifeboatError) throw error;
    const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : "";
    if (code === "SQLITE_NOTADB") {
      throw new LifeboatError(ErrorCodes.NOT_A_DATABASE, `${source} is not a SQLite database.`, {
        plugin: "testkit",
        operation,
        cause: error,
        hint: "Point at the database file itself, not a backup archive, a -wal file or a directory.",
      });
    }
    throw new LifeboatError(ErrorCodes.INTERNAL, `Could not read ${source} for ${operation}: ${String(error)}`, {
      plugin: "testkit",
      operation,
      cause: error,
      hint: "Run PRAGMA integrity_check on the file; it may be corrupt or locked exclusively.",
    });
  } finally {
    db?.close();
  }
}

/**
 * SHA-256 (hex) of the logical content of a database: `user_version`, `application_id`, the
 * schema (type, name, table and SQL of every sqlite_schema entry; not root pages), and every
 * table's column names and rows, ordered by rowid (rowid tables, rowid included) or by primary
 * key (WITHOUT ROWID tables). Each value is encoded with its storage class: NULL, '', 0, 0.0,
 * -0.0 and x'' all differ; integers are exact 64-bit, reals their IEEE-754 bits, text its UTF-8
 * bytes, BLOBs their bytes. Page size, journal mode, free pages, VACUUM and page order do not
 * change it. Virtual tables contribute only their schema (their shadow tables carry the rows).
 * `source` is a path or an open connection; reads happen in one read transaction (or the
 * caller's open transaction). A path is opened read-write when permitted, only so that closing
 * it cleans up -wal/-shm like any SQLite client; nothing is written. Throws DATABASE_NOT_FOUND /
 * NOT_A_DATABASE.
 */
export function databaseContentHash(source: string | Database.Database): string {
  return openForReading(source, "content hash", (db) => hashDatabaseContent(db, createHash));
}

/**
 * Row count of every table in the main schema, by name: ordinary and WITHOUT ROWID tables,
 * excluding SQLite's internal `sqlite_*` tables and virtual tables, counted in one read
 * transaction. `source` is a path (opened as by `databaseContentHash`) or an open connection.
 * Throws DATABASE_NOT_FOUND / NOT_A_DATABASE.
 */
export function tableRowCounts(source: string | Database.Database): Record<string, number> {
  return openForReading(source, "row count", (db) => {
    const names = db
      .prepare(
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
      )
      .pluck()
      .all() as string[];
    const counts: Record<string, number> = {};
    const ownTransaction = !db.inTransaction;
    if (ownTransaction) db.exec("BEGIN"); // one snapshot for all tables
    try {
      for (const name of names) {
        counts[name] = Number(
          db
            .prepare(`SELECT count(*) FROM "${name.replaceAll('"', '""')}"`)
            .pluck()
            .get(),
        );
      }
    } finally {
      if (ownTransaction && db.inTransaction) db.exec("COMMIT");
    }
    return counts;
  });
}
