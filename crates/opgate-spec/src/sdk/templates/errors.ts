/**
 * Every error a call throws is an `OpgateError`. The gateway's refusals are one subclass per error code
 * of the contract (`e instanceof NotFoundError`), each carrying the HTTP status, the code, the gateway's
 * message, the request id and the error object as sent (`details`); an error line that ends a failed
 * stream throws the same classes with `streamed` set. `OpgateConnectionError` and `OpgateProtocolError`
 * are failures to get such an answer at all.
 */

/** What an `OpgateError` carries beside its message. */
export interface OpgateErrorInit {
  status?: number;
  code?: string;
  requestId?: string;
  details?: Record<string, unknown>;
  streamed?: boolean;
  retryAfter?: number;
  cause?: unknown;
}

/** Base of every error of this package. */
export class OpgateError extends Error {
  /** The contract's error code, e.g. `"not_found"`; undefined when no answer came. */
  readonly code: string | undefined;
  /** The HTTP status; for an error line of a stream, the status of its code. */
  readonly status: number | undefined;
  /** The request id the gateway assigned (`X-Request-Id`), to find the call in its log. */
  readonly requestId: string | undefined;
  /** The error object as sent (`code`, `message`, `request_id` and any other field). */
  readonly details: Record<string, unknown>;
  /** Whether the error arrived as the last line of an NDJSON stream. */
  readonly streamed: boolean;
  /** Seconds the gateway asked to wait (`Retry-After`), if it said. */
  readonly retryAfter: number | undefined;

  constructor(message: string, init: OpgateErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    const defaults = new.target as unknown as { code?: string; status?: number };
    this.code = init.code ?? defaults.code;
    this.status = init.status ?? defaults.status;
    this.requestId = init.requestId;
    this.details = init.details ?? {};
    this.streamed = init.streamed ?? false;
    this.retryAfter = init.retryAfter;
  }
}

/** The gateway could not be reached, or the connection broke off mid-response. */
export class OpgateConnectionError extends OpgateError {}

/** The gateway did not answer within the timeout. */
export class OpgateTimeoutError extends OpgateConnectionError {}

/** The gateway answered something the contract does not allow (a body that is not JSON, a stream where one object was expected). */
export class OpgateProtocolError extends OpgateError {}
