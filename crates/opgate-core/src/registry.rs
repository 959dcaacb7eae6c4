use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{scope, Code, Context, Error, OpMeta, Operation, StreamOperation};

/// Produces the JSON schema of an operation's input or output type: a `$ref` into the generator's
/// definitions for named types.
pub type SchemaFn = Arc<dyn Fn(&mut SchemaGenerator) -> Schema + Send + Sync>;

/// The schema generator of the published spec: JSON Schema 2020-12 with definitions under
/// `/components/schemas`, reading types as the server reads inputs (`Deserialize`) or writes outputs
/// (`Serialize`). The registry checks new operations' types with the same settings the spec uses.
pub fn schema_generator(contract: Contract) -> SchemaGenerator {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    settings.contract = contract;
    settings.into_generator()
}

/// The response of an invoked operation, already encoded.
pub enum Encoded {
    /// One JSON object.
    Json(Bytes),
    /// NDJSON: each chunk holds one or more whole lines; an `Err` ends the stream with an error line.
    Stream(Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>),
}

/// The running handler of an invoked operation.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Result<Encoded, Error>> + Send>>;

/// A request body decoded and validated as one operation's input, ready for [`Entry::run`].
pub struct Input(Box<dyn Any + Send>);

trait Invoke: Send + Sync {
    fn decode(&self, body: &[u8]) -> Result<Input, Error>;
    fn run(&self, ctx: Context, input: Input) -> ReplyFuture;
}

/// One registered operation: its declaration, schemas, and the type-erased handler.
#[derive(Clone)]
pub struct Entry {
    /// The operation's declaration.
    pub meta: OpMeta,
    /// Whether the response is an NDJSON stream of items.
    pub streaming: bool,
    /// Schema of the request body.
    pub input_schema: SchemaFn,
    /// Schema of the response body, or of one stream item.
    pub output_schema: SchemaFn,
    /// Error codes the operation returns itself, beyond those of the pipeline.
    pub errors: &'static [Code],
    /// An example request body.
    pub example: &'static str,
    /// Declared as data ([`Registry::register_dynamic`]: an upstream service's operation), not compiled in.
    pub dynamic: bool,
    /// The top-level fields the input accepts, when its type would let others through (no
    /// `deny_unknown_fields`): the registry refuses unknown fields whatever the type says.
    known_fields: Option<Arc<[String]>>,
    handler: Arc<dyn Invoke>,
}

impl Entry {
    /// Decodes and validates `body` as this operation's input: the 400s come from here, before any handler
    /// code runs.
    pub fn decode(&self, body: &[u8]) -> Result<Input, Error> {
        if let Some(known) = &self.known_fields {
            refuse_unknown_fields(body, known)?;
        }
        self.handler.decode(body)
    }

    /// Runs the handler on an input [`Entry::decode`] made from a body for this same entry.
    pub fn run(&self, ctx: Context, input: Input) -> ReplyFuture {
        self.handler.run(ctx, input)
    }
}

/// The handler of a [`DynamicOperation`]: it decodes and validates request bodies itself (against a schema it
/// was given as data) and answers with an already encoded reply.
pub trait DynamicHandler: Send + Sync + 'static {
    /// Decodes and validates `body` (an empty body means `{}`); the 400s come from here, before the call.
    fn decode(&self, body: &[u8]) -> Result<serde_json::Value, Error>;
    /// Runs the call for an authenticated, authorized caller with an input [`DynamicHandler::decode`] made.
    fn call(&self, ctx: Context, input: serde_json::Value) -> ReplyFuture;
}

/// An operation whose declaration and schemas are data rather than Rust types, e.g. one served by an upstream
/// service declared in configuration. The registry checks it and the gateway serves it like any other.
pub struct DynamicOperation {
    /// The declaration (strings that live as long as the process; see the embedder's interning).
    pub meta: OpMeta,
    /// Whether the answer is an NDJSON stream of items.
    pub streaming: bool,
    /// JSON Schema (2020-12) of the request body, published as `components/schemas/<input_name>`.
    pub input_schema: serde_json::Value,
    /// The name the input schema is published under.
    pub input_name: String,
    /// JSON Schema of the answer (of one item when streaming), published as `<output_name>`; `None` for
    /// any JSON object.
    pub output_schema: Option<serde_json::Value>,
    /// The name the output schema is published under.
    pub output_name: String,
    /// An example request body.
    pub example: &'static str,
    /// Error codes the operation returns itself, beyond those of the pipeline.
    pub errors: &'static [Code],
    /// Decodes and runs the calls.
    pub handler: Arc<dyn DynamicHandler>,
}

/// A schema published under `name` in the spec's components, referred to by `$ref`.
fn named_schema(name: String, schema: serde_json::Value) -> SchemaFn {
    Arc::new(move |g: &mut SchemaGenerator| {
        g.definitions_mut().insert(name.clone(), schema.clone());
        Schema::try_from(serde_json::json!({ "$ref": format!("#/components/schemas/{name}") }))
            .expect("a $ref is a schema")
    })
}

struct Dynamic(Arc<dyn DynamicHandler>);

impl Invoke for Dynamic {
    fn decode(&self, body: &[u8]) -> Result<Input, Error> {
        Ok(Input(Box::new(self.0.decode(body)?)))
    }

    fn run(&self, ctx: Context, input: Input) -> ReplyFuture {
        self.0.call(ctx, typed::<serde_json::Value>(input))
    }
}

/// A startup error in the registry's configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// Two operations claim the same id.
    #[error("operation `{0}` is registered twice")]
    Duplicate(&'static str),
    /// The id is not `<resource>.<action>` in lowercase identifiers.
    #[error("operation id `{0}` is not of the form <resource>.<action>")]
    BadId(&'static str),
    /// The declared scope is malformed or a wildcard.
    #[error("operation `{0}` declares an invalid scope `{1}`")]
    BadScope(&'static str, &'static str),
    /// The declared `EXAMPLE` is not a valid request body for the operation.
    #[error("the EXAMPLE of operation `{0}` is not a valid request: {1}")]
    BadExample(&'static str, String),
    /// An input or output type publishes a schema under a name another type already uses (a built-in such
    /// as `KeyDetails` or `ErrorBody`, or another operation's): the spec would confuse them.
    #[error(
        "operation `{0}` uses a type whose schema is named `{1}`, a name another type already uses; rename \
         the type or give it `#[schemars(rename = \"...\")]`"
    )]
    SchemaCollision(&'static str, String),
}

/// The dispatch table: every operation the gateway serves, by id.
#[derive(Clone)]
pub struct Registry {
    entries: Vec<Entry>,
    by_id: HashMap<&'static str, usize>,
    /// Every named schema published so far, as inputs and as outputs, to refuse a second type under a name.
    inputs: BTreeMap<String, serde_json::Value>,
    outputs: BTreeMap<String, serde_json::Value>,
}

impl Default for Registry {
    fn default() -> Self {
        // The error body's schemas are published beside every operation's.
        let mut errors = schema_generator(Contract::Serialize);
        errors.subschema_for::<crate::ErrorBody>();
        let outputs = errors
            .take_definitions(true)
            .into_iter()
            .collect::<BTreeMap<_, _>>();
        Registry {
            entries: Vec::new(),
            by_id: HashMap::new(),
            inputs: BTreeMap::new(),
            outputs,
        }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an operation answering one JSON object.
    ///
    /// Checked here, so that a mistake fails at start-up rather than on a call: the id and scope, the
    /// `EXAMPLE` (it must decode and validate), and the schema names of the input and output types (none may
    /// take a name another type already publishes). An input type without `deny_unknown_fields` still gets
    /// unknown fields refused; `type Input = ()` takes an empty body or `{}`.
    pub fn register<O: Operation>(&mut self, op: O) -> Result<&mut Self, RegistryError> {
        self.insert(Entry {
            meta: O::META,
            streaming: false,
            input_schema: input_schema::<O::Input>(),
            output_schema: Arc::new(|g| g.subschema_for::<O::Output>()),
            errors: O::ERRORS,
            example: O::EXAMPLE,
            dynamic: false,
            known_fields: None,
            handler: Arc::new(Unary(Arc::new(op))),
        })
    }

    /// Registers an operation answering an NDJSON stream.
    pub fn register_stream<O: StreamOperation>(
        &mut self,
        op: O,
    ) -> Result<&mut Self, RegistryError> {
        self.insert(Entry {
            meta: O::META,
            streaming: true,
            input_schema: input_schema::<O::Input>(),
            output_schema: Arc::new(|g| g.subschema_for::<O::Item>()),
            errors: O::ERRORS,
            example: O::EXAMPLE,
            dynamic: false,
            known_fields: None,
            handler: Arc::new(Streaming(Arc::new(op))),
        })
    }

    /// Registers an operation declared as data ([`DynamicOperation`]), with the same checks as
    /// [`Registry::register`]: id, scope, example, and schema names no other operation uses differently.
    pub fn register_dynamic(&mut self, op: DynamicOperation) -> Result<&mut Self, RegistryError> {
        let open_object = serde_json::json!({ "type": "object" });
        let entry = Entry {
            meta: op.meta,
            streaming: op.streaming,
            input_schema: named_schema(op.input_name, op.input_schema),
            output_schema: named_schema(op.output_name, op.output_schema.unwrap_or(open_object)),
            errors: op.errors,
            example: op.example,
            dynamic: true,
            // The handler's schema decides which fields it takes; the registry adds no rule of its own.
            known_fields: None,
            handler: Arc::new(Dynamic(op.handler)),
        };
        self.insert_checked(entry, false)
    }

    fn insert(&mut self, entry: Entry) -> Result<&mut Self, RegistryError> {
        self.insert_checked(entry, true)
    }

    fn insert_checked(
        &mut self,
        mut entry: Entry,
        typed: bool,
    ) -> Result<&mut Self, RegistryError> {
        let meta = entry.meta;
        let well_formed = meta
            .id
            .split_once('.')
            .is_some_and(|(r, a)| scope::is_valid(&format!("{r}:{a}")) && a != "*");
        if !well_formed {
            return Err(RegistryError::BadId(meta.id));
        }
        let scope_ok = meta.scope == scope::AUTHENTICATED
            || (scope::is_valid(meta.scope) && !meta.scope.contains('*'));
        if !scope_ok {
            return Err(RegistryError::BadScope(meta.id, meta.scope));
        }
        if self.by_id.contains_key(meta.id) {
            return Err(RegistryError::Duplicate(meta.id));
        }
        let mut inputs = schema_generator(Contract::Deserialize);
        let root = (entry.input_schema)(&mut inputs).to_value();
        let mut outputs = schema_generator(Contract::Serialize);
        (entry.output_schema)(&mut outputs);
        let inputs = inputs.take_definitions(true);
        let outputs = outputs.take_definitions(true);
        // A name must mean one schema everywhere the spec publishes it: across operations, and between a
        // type read as an input and written as an output.
        for (name, schema) in inputs.iter().chain(outputs.iter()) {
            let taken = [
                self.inputs.get(name),
                self.outputs.get(name),
                inputs.get(name),
                outputs.get(name),
            ];
            if taken.into_iter().flatten().any(|known| known != schema) {
                return Err(RegistryError::SchemaCollision(meta.id, name.clone()));
            }
        }
        if typed {
            entry.known_fields = open_fields(&root, &inputs);
        }
        entry
            .handler
            .decode(entry.example.as_bytes())
            .map_err(|e| RegistryError::BadExample(meta.id, e.message))?;
        self.inputs.extend(inputs);
        self.outputs.extend(outputs);
        self.by_id.insert(meta.id, self.entries.len());
        self.entries.push(entry);
        Ok(self)
    }

    /// The operation with this id.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id).map(|&i| &self.entries[i])
    }

    /// Every operation, in registration order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The scopes these operations require, for checking grants.
    pub fn scopes(&self) -> scope::Catalog {
        scope::Catalog::new(self.entries.iter().map(|e| e.meta.scope))
    }
}

/// Whether `T` is `()`: an operation that takes no input.
fn is_unit<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<()>()
}

/// The schema of an input type; `()` is published as an object without fields.
fn input_schema<T: JsonSchema + 'static>() -> SchemaFn {
    if is_unit::<T>() {
        Arc::new(|_| schemars::json_schema!({ "type": "object", "additionalProperties": false }))
    } else {
        Arc::new(|g| g.subschema_for::<T>())
    }
}

/// The fields of an input object whose schema lets unknown fields through (no `additionalProperties:
/// false`), to refuse them anyway; `None` when the type refuses them itself or is not a plain object.
fn open_fields(
    root: &serde_json::Value,
    defs: &serde_json::Map<String, serde_json::Value>,
) -> Option<Arc<[String]>> {
    let schema = match root.get("$ref").and_then(serde_json::Value::as_str) {
        Some(path) => defs.get(path.rsplit('/').next()?)?,
        None => root,
    };
    if schema.get("type")? != "object"
        || schema.get("additionalProperties") == Some(&serde_json::Value::Bool(false))
    {
        return None;
    }
    let fields = schema
        .get("properties")?
        .as_object()?
        .keys()
        .cloned()
        .collect();
    Some(fields)
}

/// 400 for a top-level field of `body` that is not in `known` (only for input types that would accept it).
fn refuse_unknown_fields(body: &[u8], known: &[String]) -> Result<(), Error> {
    let Ok(fields) = serde_json::from_slice::<HashMap<String, serde::de::IgnoredAny>>(body) else {
        // Not an object: the type's own decoding names the problem.
        return Ok(());
    };
    match fields.keys().find(|f| !known.iter().any(|k| k == *f)) {
        Some(unknown) => {
            let shown: String = unknown
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect();
            Err(Error::invalid_argument(format!(
                "unknown field `{shown}`, expected one of {}",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
        None => Ok(()),
    }
}

/// Decodes a request body into `T`: an empty body means `{}`, anything but a JSON object is refused, unknown
/// fields and wrong types are named by their path, and `garde` rules are checked. `T = ()` takes `{}` only.
pub fn decode_input<T>(body: &[u8]) -> Result<T, Error>
where
    T: DeserializeOwned + garde::Validate<Context = ()> + 'static,
{
    // Only a body with nothing in it is `{}`: a blank one is not JSON (and a client sending one meant
    // something else).
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    if is_unit::<T>() {
        refuse_unknown_fields(body, &[])?;
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            Error::invalid_argument(format!(
                "the request body is not valid JSON: {}",
                strip_position(&e.to_string())
            ))
        })?;
        if !value.is_object() {
            return Err(Error::invalid_argument(
                "the request body must be a JSON object",
            ));
        }
        return serde_json::from_value(serde_json::Value::Null).map_err(|_| Error::internal());
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(Error::invalid_argument(
            "the request body must be a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let first = serde_path_to_error::deserialize(&mut de);
    let streamed = first.is_ok();
    // JSON has one number type: `5.0` is an integer to JSON Schema. Rare, so only retried on failure.
    let first = match first {
        Err(e)
            if e.inner()
                .to_string()
                .starts_with("invalid type: floating point") =>
        {
            match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(mut value) => {
                    if integral_floats_to_ints(&mut value) {
                        serde_path_to_error::deserialize(value)
                    } else {
                        Err(e)
                    }
                }
                Err(_) => Err(e),
            }
        }
        other => other,
    };
    let value: T = first.map_err(|e| {
        let mut path = e.path().to_string();
        let inner = e.into_inner();
        let reason = strip_position(&inner.to_string());
        if reason.starts_with("unknown field") {
            // The path ends in the unknown field itself, which the message already names.
            path = match path.rfind(['.', '[']) {
                Some(i) if i > 0 => path[..i].to_owned(),
                _ => ".".to_owned(),
            };
        }
        // serde_json reports some type errors (e.g. a number for an enum) as syntax errors: only a body that
        // does not parse as JSON at all is called invalid JSON.
        let not_json = (inner.is_syntax() || inner.is_eof())
            && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err();
        if not_json {
            Error::invalid_argument(format!("the request body is not valid JSON: {reason}"))
        } else if path == "." {
            Error::invalid_argument(reason)
        } else {
            Error::invalid_argument(format!("{path}: {reason}"))
        }
    })?;
    // A body decoded through `serde_json::Value` was already checked whole.
    if streamed {
        de.end().map_err(|e| {
            Error::invalid_argument(format!(
                "the request body is not valid JSON: {}",
                strip_position(&e.to_string())
            ))
        })?;
    }
    value.validate().map_err(|report| {
        let message = report
            .iter()
            .map(|(path, error)| format!("{path}: {error}"))
            .collect::<Vec<_>>()
            .join("; ");
        Error::invalid_argument(message)
    })?;
    Ok(value)
}

/// Rewrites numbers like `5.0` as integers, in place; whether any was rewritten.
fn integral_floats_to_ints(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                *value = Value::from(f as i64);
                true
            } else {
                false
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, v| integral_floats_to_ints(v) | any),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |any, v| integral_floats_to_ints(v) | any),
        _ => false,
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn encode_json<T: Serialize>(value: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::internal().with_cause(e))
}

struct Unary<O>(Arc<O>);

/// The typed input inside an [`Input`]; only the entry that decoded it runs it.
fn typed<T: 'static>(input: Input) -> T {
    *input
        .0
        .downcast::<T>()
        .expect("an input is run by the entry that decoded it")
}

impl<O: Operation> Invoke for Unary<O> {
    fn decode(&self, body: &[u8]) -> Result<Input, Error> {
        Ok(Input(Box::new(decode_input::<O::Input>(body)?)))
    }

    fn run(&self, ctx: Context, input: Input) -> ReplyFuture {
        let op = Arc::clone(&self.0);
        let input = typed::<O::Input>(input);
        Box::pin(async move {
            let output = op.call(ctx, input).await?;
            encode_json(&output).map(Encoded::Json)
        })
    }
}

struct Streaming<O>(Arc<O>);

/// Items serialized into one chunk when they are ready together; keeps per-frame overhead low.
const ITEMS_PER_CHUNK: usize = 256;

impl<O: StreamOperation> Invoke for Streaming<O> {
    fn decode(&self, body: &[u8]) -> Result<Input, Error> {
        Ok(Input(Box::new(decode_input::<O::Input>(body)?)))
    }

    fn run(&self, ctx: Context, input: Input) -> ReplyFuture {
        let op = Arc::clone(&self.0);
        let input = typed::<O::Input>(input);
        Box::pin(async move {
            // Fused before the first poll: an empty stream must not be polled again after it ended.
            let mut items = op.call(ctx, input).await?.fuse();
            // The first item is awaited before answering: a stream that fails at once (e.g. storage down on
            // the first page) is an ordinary error response, not a 200 whose only line is an error.
            let first = match items.next().await {
                Some(Err(e)) => return Err(e),
                first => first,
            };
            let items = futures_util::stream::iter(first).chain(items);
            let chunks = items.ready_chunks(ITEMS_PER_CHUNK).map(encode_lines);
            Ok(Encoded::Stream(Box::pin(split_error(chunks))))
        })
    }
}

/// Encodes ready items as NDJSON lines; an error stops at that item, keeping the lines before it.
fn encode_lines<T: Serialize>(items: Vec<Result<T, Error>>) -> (Bytes, Option<Error>) {
    let mut buf = BytesMut::new().writer();
    for item in items {
        match item {
            Ok(item) => {
                if let Err(e) = serde_json::to_writer(&mut buf, &item) {
                    return (
                        buf.into_inner().freeze(),
                        Some(Error::internal().with_cause(e)),
                    );
                }
                buf.get_mut().put_u8(b'\n');
            }
            Err(e) => return (buf.into_inner().freeze(), Some(e)),
        }
    }
    (buf.into_inner().freeze(), None)
}

/// Turns `(lines, error)` chunks into a stream that yields the lines, then the error, then ends.
fn split_error(
    chunks: impl Stream<Item = (Bytes, Option<Error>)> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, Error>> + Send {
    futures_util::stream::unfold(
        (Box::pin(chunks), None::<Error>, false),
        |(mut chunks, pending, done)| async move {
            if done {
                return None;
            }
            if let Some(e) = pending {
                return Some((Err(e), (chunks, None, true)));
            }
            match chunks.next().await {
                None => None,
                Some((lines, None)) => Some((Ok(lines), (chunks, None, false))),
                Some((lines, Some(e))) if lines.is_empty() => Some((Err(e), (chunks, None, true))),
                Some((lines, Some(e))) => Some((Ok(lines), (chunks, Some(e), false))),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Code, SideEffect};
    use schemars::JsonSchema;
    use serde::Deserialize;

    #[derive(Serialize, JsonSchema)]
    struct Out {
        name: String,
    }

    #[derive(Deserialize, JsonSchema, garde::Validate, Serialize)]
    #[serde(deny_unknown_fields)]
    struct In {
        #[garde(length(min = 1, max = 4))]
        name: String,
        #[garde(range(max = 10))]
        #[serde(default)]
        n: Option<u32>,
    }

    struct Op;
    impl Operation for Op {
        const META: OpMeta = OpMeta {
            id: "things.make",
            scope: "things:write",
            side_effect: SideEffect::Write,
            summary: "Make a thing.",
        };
        const EXAMPLE: &'static str = r#"{"name": "a"}"#;
        type Input = In;
        type Output = Out;
        async fn call(&self, _ctx: Context, input: In) -> Result<Out, Error> {
            Ok(Out { name: input.name })
        }
    }

    fn msg(body: &str) -> String {
        let e = decode_input::<In>(body.as_bytes())
            .err()
            .expect("should fail");
        assert_eq!(e.code, Code::InvalidArgument);
        e.message
    }

    #[test]
    fn decoding_names_the_field() {
        assert_eq!(msg("[]"), "the request body must be a JSON object");
        assert_eq!(msg(""), "missing field `name`");
        assert_eq!(
            msg("  "),
            "the request body must be a JSON object",
            "blank is not empty"
        );
        assert!(
            msg(r#"{"name":"a","x":1}"#).starts_with("unknown field `x`"),
            "{}",
            msg(r#"{"name":"a","x":1}"#)
        );
        assert_eq!(
            msg(r#"{"name":5}"#),
            "name: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            msg(r#"{"name":"a"} x"#),
            "the request body is not valid JSON: trailing characters"
        );
        assert!(msg(r#"{"name":"#).starts_with("the request body is not valid JSON"));
        assert!(msg(r#"{"name":""}"#).starts_with("name: "));
        assert!(msg(r#"{"name":"a","n":11}"#).starts_with("n: "));
        assert!(decode_input::<In>(br#"{"name":"ab","n":3}"#).is_ok());
        assert!(
            decode_input::<In>(br#"{"name":"ab","n":3.0}"#).is_ok(),
            "3.0 is an integer"
        );
        assert!(msg(r#"{"name":"ab","n":3.5}"#).starts_with("n: invalid type: floating point"));
    }

    struct Failing;
    impl StreamOperation for Failing {
        const META: OpMeta = OpMeta {
            id: "things.list",
            scope: "things:read",
            side_effect: SideEffect::Read,
            summary: "List things.",
        };
        const EXAMPLE: &'static str = r#"{"name": "a"}"#;
        type Input = In;
        type Item = Out;
        async fn call(&self, _ctx: Context, _input: In) -> Result<crate::Items<Out>, Error> {
            Ok(Box::pin(futures_util::stream::iter([Err(
                Error::unavailable("storage is down"),
            )])))
        }
    }

    struct Empty;
    impl StreamOperation for Empty {
        const META: OpMeta = OpMeta {
            id: "things.none",
            scope: "things:read",
            side_effect: SideEffect::Read,
            summary: "List nothing.",
        };
        const EXAMPLE: &'static str = r#"{"name": "a"}"#;
        type Input = In;
        type Item = Out;
        async fn call(&self, _ctx: Context, _input: In) -> Result<crate::Items<Out>, Error> {
            // An unfold panics when polled after its end: the dispatcher must not do that.
            Ok(Box::pin(futures_util::stream::unfold((), |_| async {
                None::<(Result<Out, Error>, ())>
            })))
        }
    }

    #[tokio::test]
    async fn an_empty_stream_ends_cleanly() {
        let mut r = Registry::new();
        r.register_stream(Empty).unwrap();
        let entry = r.get("things.none").unwrap();
        let running = entry.run(test_ctx(), entry.decode(br#"{"name":"a"}"#).unwrap());
        let Ok(Encoded::Stream(mut lines)) = running.await else {
            panic!("a stream")
        };
        assert!(lines.next().await.is_none());
    }

    fn test_ctx() -> Context {
        Context {
            principal: std::sync::Arc::new(crate::Principal {
                kind: crate::PrincipalKind::ApiKey,
                id: "k".into(),
                org: "o".into(),
                permissions: vec![],
                rate_limit: None,
                expires_at: None,
                allowed_ips: vec![],
                mode: crate::Mode::Live,
                key_type: None,
                workspace: None,
                environment: None,
                service_account: None,
            }),
            request_id: "r".into(),
            client_ip: None,
            target: Default::default(),
            scopes: Default::default(),
            clock: crate::SystemClock::shared(),
            workspace: None,
        }
    }

    #[tokio::test]
    async fn a_stream_failing_before_its_first_item_is_an_ordinary_error() {
        let mut r = Registry::new();
        r.register_stream(Failing).unwrap();
        let ctx = test_ctx();
        let entry = r.get("things.list").unwrap();
        let running = entry.run(ctx, entry.decode(br#"{"name":"a"}"#).unwrap());
        let e = running.await.err().expect("an error, not a stream");
        assert_eq!(e.code, Code::Unavailable);
    }

    #[test]
    fn registry_rejects_duplicates_and_bad_ids() {
        let mut r = Registry::new();
        r.register(Op).unwrap();
        assert_eq!(
            r.register(Op).err(),
            Some(RegistryError::Duplicate("things.make"))
        );
        assert!(r.get("things.make").is_some());
        assert!(r.get("things.other").is_none());
    }

    /// An embedder's type that happens to share a built-in's name.
    mod theirs {
        #[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema, garde::Validate)]
        pub(super) struct In {
            #[garde(skip)]
            pub(super) other: u8,
        }
    }

    struct Colliding;
    impl Operation for Colliding {
        const META: OpMeta = OpMeta {
            id: "things.clash",
            scope: "things:write",
            side_effect: SideEffect::Write,
            summary: "Clash.",
        };
        const EXAMPLE: &'static str = r#"{"other": 1}"#;
        type Input = theirs::In;
        type Output = theirs::In;
        async fn call(&self, _ctx: Context, input: theirs::In) -> Result<theirs::In, Error> {
            Ok(input)
        }
    }

    struct Bare;
    impl Operation for Bare {
        const META: OpMeta = OpMeta {
            id: "things.ping",
            scope: "things:read",
            side_effect: SideEffect::Read,
            summary: "No input.",
        };
        type Input = ();
        type Output = ();
        async fn call(&self, _ctx: Context, _input: ()) -> Result<(), Error> {
            Ok(())
        }
    }

    struct BadExample;
    impl Operation for BadExample {
        const META: OpMeta = OpMeta {
            id: "things.bad",
            scope: "things:write",
            side_effect: SideEffect::Write,
            summary: "Bad example.",
        };
        const EXAMPLE: &'static str = r#"{"name": ""}"#;
        type Input = In;
        type Output = Out;
        async fn call(&self, _ctx: Context, input: In) -> Result<Out, Error> {
            Ok(Out { name: input.name })
        }
    }

    #[test]
    fn registration_refuses_traps_loudly() {
        let mut r = Registry::new();
        r.register(Op).unwrap();
        assert_eq!(
            r.register(Colliding).err(),
            Some(RegistryError::SchemaCollision("things.clash", "In".into())),
            "a second type named `In` would be published as `In2`"
        );
        let e = r.register(BadExample).err().unwrap();
        assert!(
            matches!(&e, RegistryError::BadExample("things.bad", m) if m.starts_with("name: ")),
            "{e}"
        );
        // A type named like the error body is refused too.
        #[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema, garde::Validate)]
        struct ErrorBody {
            #[garde(skip)]
            x: u8,
        }
        struct Shadow;
        impl Operation for Shadow {
            const META: OpMeta = OpMeta {
                id: "things.shadow",
                scope: "things:write",
                side_effect: SideEffect::Write,
                summary: "Shadow.",
            };
            const EXAMPLE: &'static str = r#"{"x": 1}"#;
            type Input = ErrorBody;
            type Output = ErrorBody;
            async fn call(&self, _ctx: Context, input: ErrorBody) -> Result<ErrorBody, Error> {
                Ok(input)
            }
        }
        assert_eq!(
            Registry::new().register(Shadow).err(),
            Some(RegistryError::SchemaCollision(
                "things.shadow",
                "ErrorBody".into()
            ))
        );
    }

    #[test]
    fn an_operation_without_input_takes_an_empty_body_and_refuses_fields() {
        let mut r = Registry::new();
        r.register(Bare).unwrap();
        let entry = r.get("things.ping").unwrap();
        assert!(entry.decode(b"").is_ok());
        assert!(entry.decode(b"{}").is_ok());
        assert!(entry.decode(b" { } ").is_ok());
        let e = entry.decode(br#"{"x": 1}"#).err().unwrap();
        assert!(e.message.starts_with("unknown field `x`"), "{}", e.message);
        assert_eq!(
            entry.decode(b"[]").err().unwrap().message,
            "the request body must be a JSON object"
        );
    }

    #[test]
    fn unknown_fields_are_refused_even_without_deny_unknown_fields() {
        let mut r = Registry::new();
        r.register(Colliding).unwrap();
        let entry = r.get("things.clash").unwrap();
        assert!(entry.decode(br#"{"other": 1}"#).is_ok());
        let e = entry.decode(br#"{"other": 1, "othr": 2}"#).err().unwrap();
        assert_eq!(e.message, "unknown field `othr`, expected one of `other`");
    }
}
