import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { splitSqlStatements, transactionConflict } from "./sql-statements.js";

const SCRIPT = `-- migration 7; with comments; everywhere
CREATE TABLE "semi;colon" (id INTEGER PRIMARY KEY, [odd;name] TEXT, \`back;tick\` TEXT);
/* a block comment; with a semicolon */
INSERT INTO "semi;colon" VALUES (1, 'it''s; fine', 'a;b');
CREATE TEMP TRIGGER t1 AFTER INSERT ON "semi;colon" BEGIN
  INSERT INTO log VALUES (CASE WHEN new.id > 1 THEN 'big;' ELSE 'small' END);
  UPDATE log SET v = v || ';';
END;
CREATE TABLE log (v TEXT);
CREATE TRIGGER IF NOT EXISTS t2 AFTER DELETE ON log BEGIN SELECT 1; END;
INSERT INTO "semi;colon" VALUES (2, 'x', 'y');
SELECT * FROM log;;
PRAGMA user_version = 8`;

describe("splitSqlStatements", () => {
  it("splits where SQLite ends statements: not in strings, quoted names, comments or trigger bodies", () => {
    const statements = splitSqlStatements(SCRIPT);
    expect(statements.map((s) => s.words[0])).toEqual([
      "create",
      "insert",
      "create",
      "create",
      "create",
      "insert",
      "select",
      "pragma",
    ]);
    expect(statements.map((s) => s.line)).toEqual([2, 4, 5, 9, 10, 11, 12, 13]);
    expect(statements[2]!.text).toMatch(/^CREATE TEMP TRIGGER t1[\s\S]*END;$/);
    expect(statements[1]!.text).toBe(`INSERT INTO "semi;colon" VALUES (1, 'it''s; fine', 'a;b');`);
    expect(statements.at(-1)!.text).toBe("PRAGMA user_version = 8");
  });

  it("gives statements that each prepare alone and run to the same database as the whole script", () => {
    const whole = new Database(":memory:");
    const split = new Database(":memory:");
    whole.exec(SCRIPT);
    for (const statement of splitSqlStatements(SCRIPT)) {
      const prepared = split.prepare(statement.text); // throws on more or less than one statement
      if (prepared.reader) prepared.all();
      else prepared.run();
    }
    const dump = (db: Database.Database) => ({
      log: db.prepare("SELECT * FROM log").all(),
      rows: db.prepare('SELECT * FROM "semi;colon"').all(),
      version: db.pragma("user_version", { simple: true }),
    });
    expect(dump(split)).toEqual(dump(whole));
    expect(dump(split).log).toEqual([{ v: "big;;" }]);
  });

  it("drops empty statements and keeps an unterminated last one", () => {
    expect(splitSqlStatements(" ;; -- nothing\n/* here */ ;")).toEqual([]);
    expect(splitSqlStatements("SELECT 1").map((s) => s.text)).toEqual(["SELECT 1"]);
  });
});

describe("transactionConflict", () => {
  const conflict = (text: string) => transactionConflict(splitSqlStatements(text)[0]!);

  it("refuses statements that would end or nest exec's transaction, and VACUUM", () => {
    for (const text of [
      "BEGIN",
      "begin immediate transaction",
      "COMMIT",
      "END TRANSACTION",
      "ROLLBACK",
      "rollback transaction",
      "VACUUM",
    ]) {
      expect(conflict(text), text).not.toBeNull();
    }
  });

  it("allows savepoints and everything else", () => {
    for (const text of [
      "SAVEPOINT s1",
      "RELEASE s1",
      "ROLLBACK TO s1",
      "ROLLBACK TRANSACTION TO SAVEPOINT s1",
      "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END",
      "UPDATE t SET v = 'COMMIT'",
      "EXPLAIN COMMIT",
    ]) {
      expect(conflict(text), text).toBeNull();
    }
  });
});
