type ErrorClass = new (message: string, init?: OpgateErrorInit) => OpgateError;

function classFor(code: string | undefined, status: number): ErrorClass {
  if (code !== undefined && code in ERROR_CLASSES) return ERROR_CLASSES[code as ErrorCode];
  // A code this package does not know (a newer gateway): the class of the status, if one has it.
  for (const cls of Object.values(ERROR_CLASSES)) {
    if ((cls as unknown as { status: number }).status === status) return cls;
  }
  return OpgateError;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The error a non-2xx response stands for: its contract body when it has one, else the status. */
export function errorFromResponse(
  status: number,
  body: string,
  requestId: string | undefined,
  headers?: Headers,
): OpgateError {
  const after = headers?.get("retry-after");
  const retryAfter =
    after === null || after === undefined || !Number.isFinite(Number(after)) ? undefined : Number(after);
  let error: unknown;
  try {
    error = (JSON.parse(body) as { error?: unknown }).error;
  } catch {
    error = undefined;
  }
  if (isRecord(error) && typeof error.code === "string" && typeof error.message === "string") {
    const cls = classFor(error.code, status);
    return new cls(error.message, {
      status,
      code: error.code,
      requestId: typeof error.request_id === "string" ? error.request_id : requestId,
      details: error,
      retryAfter,
    });
  }
  const text = body.trim().slice(0, 200);
  const cls = classFor(undefined, status);
  return new cls(
    text
      ? `the gateway answered HTTP ${status}: ${text}`
      : `the gateway answered HTTP ${status} without an error body`,
    { status, requestId, retryAfter },
  );
}

/**
 * The error an NDJSON line stands for, when it is exactly the contract's `{"error": {...}}` line (an item
 * that merely has an `error` field is not one).
 */
export function errorFromLine(item: unknown, requestId: string | undefined): OpgateError | undefined {
  if (!isRecord(item)) return undefined;
  const keys = Object.keys(item);
  if (keys.length !== 1 || keys[0] !== "error") return undefined;
  const error = item.error;
  if (!isRecord(error) || typeof error.code !== "string" || typeof error.message !== "string")
    return undefined;
  const status = STATUS_OF_CODE[error.code as ErrorCode] ?? 500;
  return new (classFor(error.code, status))(error.message, {
    status,
    code: error.code,
    requestId: typeof error.request_id === "string" ? error.request_id : requestId,
    details: error,
    streamed: true,
  });
}
