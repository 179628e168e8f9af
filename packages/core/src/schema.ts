/**
 * Plugins validate their options with any Standard Schema validator (zod, valibot, arktype...),
 * so third parties are not tied to our zod version. The interface below is the published
 * Standard Schema v1 (https://standardschema.dev), reduced to what we use.
 */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly "~standard": {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (value: unknown) => StandardResult<Output> | Promise<StandardResult<Output>>;
    readonly types?: { readonly input: Input; readonly output: Output } | undefined;
  };
}

export type StandardResult<Output> =
  | { readonly value: Output; readonly issues?: undefined }
  | { readonly issues: ReadonlyArray<StandardIssue> };

export interface StandardIssue {
  readonly message: string;
  readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined;
}

/** Renders an issue path the way users see it in messages: `databases[0].targets[1].path`. */
export function formatIssuePath(base: string, path: StandardIssue["path"]): string {
  let out = base;
  for (const part of path ?? []) {
    const key = typeof part === "object" && part !== null ? part.key : part;
    if (typeof key === "number") out += `[${key}]`;
    else out += out === "" ? String(key) : `.${String(key)}`;
  }
  return out || "(top level)";
}
