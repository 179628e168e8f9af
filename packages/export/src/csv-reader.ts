/**
 * A strict, streaming reader for the CSV files an export writes (RFC 4180: UTF-8 with a BOM,
 * CRLF after every record, `"` quoting). Unlike a general CSV parser it reports, for every field,
 * whether it was quoted, which is what tells text from the other storage classes (see
 * value-codec.ts), and it does so without building a context object per field (import speed).
 * Anything an export never writes (a bare LF, a quote inside an unquoted field, a missing final
 * CRLF, a missing BOM) is an error, so damage shows up as an error rather than as other data.
 */
import { StringDecoder } from "node:string_decoder";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import { decodeField, type SqliteValue } from "./value-codec.js";

const QUOTE = 34;
const COMMA = 44;
const CR = 13;
const LF = 10;

enum State {
  /** At the start of a field (or of a record). */
  FieldStart,
  /** Inside a quoted field. */
  Quoted,
  /** Inside a quoted field, right after a `"`: either an escaped quote or the field's end. */
  QuoteInQuoted,
  Unquoted,
  /** After a field's end: expecting `,` or CRLF. */
  AfterField,
  /** After the CR of a record's end: expecting LF. */
  AfterCr,
}

export class CsvReader {
  readonly #decoder = new StringDecoder("utf8");
  readonly #onRecord: (record: SqliteValue[]) => void;
  readonly #where: string;
  #state = State.FieldStart;
  #parts: string[] = [];
  #record: SqliteValue[] = [];
  #records = 0;
  #started = false;

  /** `onRecord` gets every record (the header too), values decoded; `where` names the file in errors. */
  constructor(where: string, onRecord: (record: SqliteValue[]) => void) {
    this.#where = where;
    this.#onRecord = onRecord;
  }

  /** Records completed so far, the header included. */
  get records(): number {
    return this.#records;
  }

  #fail(what: string): never {
    throw new LifeboatError(ErrorCodes.CORRUPT_BACKUP, `${this.#where}, record ${this.#records + 1}: ${what}.`, {
      plugin: "export",
      operation: "import",
      hint: "The export was changed or damaged after it was written; use an untouched copy (or export again).",
    });
  }

  #endField(text: string, quoted: boolean): void {
    this.#record.push(
      quoted
        ? text
        : decodeField(
            text,
            false,
            () => `${this.#where}, record ${this.#records + 1}, field ${this.#record.length + 1}`,
          ),
    );
    this.#state = State.AfterField;
  }

  write(chunk: Buffer): void {
    let text = this.#decoder.write(chunk);
    if (!this.#started) {
      if (text.length === 0) return;
      if (text.charCodeAt(0) !== 0xfeff) this.#fail("the file does not start with a UTF-8 byte order mark");
      text = text.slice(1);
      this.#started = true;
    }
    this.#feed(text);
  }

  /** Call at the end of the file: throws when it ends inside a record (a truncated file). */
  end(): void {
    this.#feed(this.#decoder.end());
    if (!this.#started) this.#fail("the file is empty");
    if (this.#state !== State.FieldStart || this.#record.length > 0 || this.#parts.length > 0) {
      this.#fail("the file ends in the middle of a record (truncated?)");
    }
  }

  #feed(text: string): void {
    const n = text.length;
    let i = 0;
    while (i < n) {
      switch (this.#state) {
        case State.FieldStart:
          if (text.charCodeAt(i) === QUOTE) {
            this.#state = State.Quoted;
            i++;
          } else {
            this.#state = State.Unquoted;
          }
          break;
        case State.Quoted: {
          const j = text.indexOf('"', i);
          if (j < 0) {
            this.#parts.push(text.slice(i));
            i = n;
          } else {
            this.#parts.push(text.slice(i, j));
            this.#state = State.QuoteInQuoted;
            i = j + 1;
          }
          break;
        }
        case State.QuoteInQuoted:
          if (text.charCodeAt(i) === QUOTE) {
            this.#parts.push('"');
            this.#state = State.Quoted;
            i++;
          } else {
            const value = this.#parts.length === 1 ? this.#parts[0]! : this.#parts.join("");
            this.#parts = [];
            this.#endField(value, true);
          }
          break;
        case State.Unquoted: {
          let j = i;
          let c = 0;
          for (; j < n; j++) {
            c = text.charCodeAt(j);
            if (c === COMMA || c === CR || c === QUOTE || c === LF) break;
          }
          if (j === n) {
            this.#parts.push(text.slice(i));
            i = n;
            break;
          }
          if (c === QUOTE || c === LF)
            this.#fail(c === QUOTE ? 'a " inside an unquoted field' : "a line feed without a carriage return");
          const part = text.slice(i, j);
          const value = this.#parts.length === 0 ? part : this.#parts.join("") + part;
          this.#parts = [];
          this.#endField(value, false);
          i = j;
          break;
        }
        case State.AfterField: {
          const c = text.charCodeAt(i);
          i++;
          if (c === COMMA) this.#state = State.FieldStart;
          else if (c === CR) this.#state = State.AfterCr;
          else this.#fail(`"${text[i - 1]}" after a quoted field where a comma or the end of the line belongs`);
          break;
        }
        case State.AfterCr: {
          if (text.charCodeAt(i) !== LF) this.#fail("a carriage return without a line feed");
          i++;
          const record = this.#record;
          this.#record = [];
          this.#state = State.FieldStart;
          this.#records++;
          this.#onRecord(record);
          break;
        }
      }
    }
  }
}
