//! `opgate webhooks create|list|get|update|delete|rotate-secret|deliveries|redeliver`: one subcommand per
//! `webhooks.*` operation, one flag per input field (`event_types` is `--event-types`, comma-separated),
//! building the server's own input types. The endpoint id (and the delivery id of `redeliver`) may also be
//! given positionally. `create` and `rotate-secret` print the signing secret this once.
//!
//! The endpoint's `url` is `--webhook-url`: `--url` is every command's gateway URL, and a webhook URL taken
//! for it would send the caller's token to the receiver. A `--url` after `create` or `update` is refused for
//! that reason (give the gateway's before the subcommand, or in `OPGATE_URL`).

use std::io::{self, Write};

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use opgate_client::types::{
    CreateWebhookInput, DeliveryDetails, DeliveryStatus, EventType, ListDeliveriesInput,
    ListWebhooksInput, RedeliverInput, UpdateWebhookInput, WebhookDetails, WebhookIdInput,
    WebhookWithSecret,
};
use opgate_client::{CallOptions, Timestamp};

use super::{
    idempotent, nullable, one_id, output, print_call, tabulate, warn_secret_once, Connection, Exit,
    EXIT_USAGE,
};

/// `opgate webhooks ...`.
#[derive(Args)]
pub(crate) struct WebhooksArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: WebhooksCommand,
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Create a webhook endpoint for the organization's events of the caller's mode (`webhooks.create`); its
    /// signing secret is printed this once.
    Create(CreateArgs),
    /// List the organization's webhook endpoints of the caller's mode, oldest first (`webhooks.list`).
    List(ListArgs),
    /// Show one webhook endpoint, never its secret (`webhooks.get`).
    Get(GetArgs),
    /// Change an endpoint's URL, event types or description, or disable or enable it (`webhooks.update`);
    /// omitted flags leave fields as they are.
    Update(UpdateArgs),
    /// Delete a webhook endpoint; its waiting deliveries fail (`webhooks.delete`).
    Delete(DeleteArgs),
    /// Replace an endpoint's signing secret; the new one is printed this once and signs every delivery from
    /// now on (`webhooks.rotate_secret`).
    RotateSecret(RotateSecretArgs),
    /// List webhook deliveries, newest first: status, last answer and every attempt
    /// (`webhooks.deliveries`).
    Deliveries(DeliveriesArgs),
    /// Send a delivery again now, same event and same `webhook-id`, delivered or failed alike
    /// (`webhooks.redeliver`).
    Redeliver(RedeliverArgs),
}

/// A comma-separated list of event types; empty (`--event-types ''`) is the empty list: every type.
#[derive(Clone)]
struct EventTypes(Vec<EventType>);

/// `--event-types`: wire names separated by commas, e.g. `api_key.created,api_key.revoked`.
fn parse_event_types(text: &str) -> Result<EventTypes, String> {
    text.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            EventType::parse(name).ok_or_else(|| {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "`{name}` is not an event type (possible values: {})",
                    known.join(", ")
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(EventTypes)
}

/// The wire name of a delivery status.
fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Failed => "failed",
    }
}

/// `--status`: `pending`, `delivered` or `failed`, offered in help and completions.
fn status_parser() -> impl TypedValueParser<Value = DeliveryStatus> {
    const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];
    PossibleValuesParser::new(ALL.map(status_name)).map(|name| {
        ALL.into_iter()
            .find(|s| status_name(*s) == name)
            .expect("a possible value")
    })
}

#[derive(Args)]
struct CreateArgs {
    /// `https://` URL events are POSTed to (the input's `url`; `http://` only to loopback unless the server
    /// allows it); loopback, private and link-local addresses are refused unless the server runs with
    /// `--allow-private-webhooks`. Not `--url`, which names the gateway.
    #[arg(long, value_name = "URL")]
    webhook_url: String,
    /// Comma-separated event types to get (`api_key.created`, `api_key.updated`, `api_key.rotated`,
    /// `api_key.revoked`, `webhook.disabled`); default: every type.
    #[arg(long, value_name = "TYPES", value_parser = parse_event_types)]
    event_types: Option<EventTypes>,
    /// Free-text description.
    #[arg(long)]
    description: Option<String>,
}

#[derive(Args)]
struct ListArgs {
    /// Stop after this many endpoints; default: all.
    #[arg(long)]
    limit: Option<u32>,
    /// Start after the endpoint with this id (the last id of a previous page).
    #[arg(long, value_name = "WH_ID")]
    after_id: Option<String>,
}

/// The endpoint a command acts on: `opgate webhooks get wh_01...` or `--webhook-id wh_01...` (the form the
/// API reference shows), exactly one of the two.
#[derive(Args)]
#[group(id = "id", required = true, multiple = false)]
struct WebhookId {
    /// Id of the webhook endpoint (`wh_...`).
    #[arg(value_name = "WH_ID")]
    webhook_id: Option<String>,
    /// Id of the webhook endpoint, as a flag (instead of WH_ID).
    #[arg(long = "webhook-id", value_name = "WH_ID")]
    webhook_id_flag: Option<String>,
}

impl WebhookId {
    fn into_id(self) -> String {
        one_id(self.webhook_id, self.webhook_id_flag)
    }
}

#[derive(Args)]
struct GetArgs {
    #[command(flatten)]
    webhook: WebhookId,
}

#[derive(Args)]
struct UpdateArgs {
    #[command(flatten)]
    webhook: WebhookId,
    /// New URL events are POSTed to (the input's `url`; the same rules as `create --webhook-url`). Not
    /// `--url`, which names the gateway.
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    /// New comma-separated event types; `''` (none): every type.
    #[arg(long, value_name = "TYPES", value_parser = parse_event_types)]
    event_types: Option<EventTypes>,
    /// New description.
    #[arg(long, conflicts_with = "clear_description")]
    description: Option<String>,
    /// Remove the description (sends `null`).
    #[arg(long)]
    clear_description: bool,
    /// `false` disables the endpoint: no events are queued for it meanwhile, and its waiting deliveries
    /// hold; `true` (or the bare flag) enables it again, and those go on in order.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    enabled: Option<bool>,
    /// `Idempotency-Key` header: a retry with the same key and flags gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args)]
struct DeleteArgs {
    #[command(flatten)]
    webhook: WebhookId,
    /// `Idempotency-Key` header: a retry with the same key gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args)]
struct RotateSecretArgs {
    #[command(flatten)]
    webhook: WebhookId,
}

#[derive(Args)]
struct DeliveriesArgs {
    /// Only this endpoint's deliveries (`wh_...`).
    #[arg(long, value_name = "WH_ID")]
    webhook_id: Option<String>,
    /// Only deliveries in this state.
    #[arg(long, value_parser = status_parser())]
    status: Option<DeliveryStatus>,
    /// Only deliveries older than the one with this id (the last id of a previous page).
    #[arg(long, value_name = "WHD_ID")]
    before_id: Option<String>,
    /// Most deliveries to list (default 100).
    #[arg(long)]
    limit: Option<u32>,
}

/// The delivery `redeliver` sends again: `opgate webhooks redeliver whd_01...` or `--delivery-id whd_01...`
/// (the form the API reference shows), exactly one of the two.
#[derive(Args)]
#[group(id = "id", required = true, multiple = false)]
struct DeliveryId {
    /// Id of the delivery (`whd_...`).
    #[arg(value_name = "WHD_ID")]
    delivery_id: Option<String>,
    /// Id of the delivery, as a flag (instead of WHD_ID).
    #[arg(long = "delivery-id", value_name = "WHD_ID")]
    delivery_id_flag: Option<String>,
}

#[derive(Args)]
struct RedeliverArgs {
    #[command(flatten)]
    delivery: DeliveryId,
    /// `Idempotency-Key` header: a retry with the same key gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Runs `opgate webhooks ...`.
pub(crate) async fn run(args: WebhooksArgs) -> Result<(), Exit> {
    match &args.command {
        WebhooksCommand::Create(_) => refuse_url_after("create")?,
        WebhooksCommand::Update(_) => refuse_url_after("update")?,
        _ => {}
    }
    let client = args.conn.client()?;
    let json = args.conn.json;
    let handle = |options: &CallOptions| match &options.idempotency_key {
        Some(k) => client.webhooks().idempotency_key(k),
        None => client.webhooks(),
    };
    match args.command {
        WebhooksCommand::Create(a) => {
            let input = CreateWebhookInput {
                url: a.webhook_url,
                event_types: a.event_types.map(|t| t.0),
                description: a.description,
            };
            if json {
                print_call(&client, "webhooks.create", &input, &CallOptions::default()).await?;
            } else {
                print_with_secret(&client.webhooks().create(input).await?)?;
            }
            warn_secret_once();
            Ok(())
        }
        WebhooksCommand::List(a) => {
            let input = ListWebhooksInput {
                limit: a.limit,
                after_id: a.after_id,
            };
            if json {
                return print_call(&client, "webhooks.list", &input, &CallOptions::default()).await;
            }
            let now = Timestamp::now().unix();
            let items = client.webhooks().list(input).await?;
            tabulate(
                items,
                &[
                    "ID",
                    "URL",
                    "EVENT TYPES",
                    "STATUS",
                    "CREATED",
                    "DESCRIPTION",
                ],
                |w| {
                    vec![
                        w.id,
                        w.url,
                        event_types(&w.event_types),
                        status(w.enabled).to_owned(),
                        output::relative(w.created_at, now),
                        output::or(w.description, "-"),
                    ]
                },
            )
            .await
        }
        WebhooksCommand::Get(a) => {
            let input = WebhookIdInput {
                webhook_id: a.webhook.into_id(),
            };
            if json {
                return print_call(&client, "webhooks.get", &input, &CallOptions::default()).await;
            }
            let webhook = client.webhooks().get(input).await?;
            print_details(&mut io::stdout().lock(), &webhook, &[])
        }
        WebhooksCommand::Update(a) => {
            let options = idempotent(a.idempotency_key);
            let input = UpdateWebhookInput {
                webhook_id: a.webhook.into_id(),
                url: a.webhook_url,
                event_types: a.event_types.map(|t| t.0),
                description: nullable(a.description, a.clear_description),
                enabled: a.enabled,
            };
            if json {
                return print_call(&client, "webhooks.update", &input, &options).await;
            }
            let webhook = handle(&options).update(input).await?;
            print_details(&mut io::stdout().lock(), &webhook, &[])
        }
        WebhooksCommand::Delete(a) => {
            let options = idempotent(a.idempotency_key);
            let input = WebhookIdInput {
                webhook_id: a.webhook.into_id(),
            };
            if json {
                return print_call(&client, "webhooks.delete", &input, &options).await;
            }
            let webhook = handle(&options).delete(input).await?;
            print_details(&mut io::stdout().lock(), &webhook, &[])
        }
        WebhooksCommand::RotateSecret(a) => {
            let input = WebhookIdInput {
                webhook_id: a.webhook.into_id(),
            };
            if json {
                print_call(
                    &client,
                    "webhooks.rotate_secret",
                    &input,
                    &CallOptions::default(),
                )
                .await?;
            } else {
                print_with_secret(&client.webhooks().rotate_secret(input).await?)?;
            }
            warn_secret_once();
            Ok(())
        }
        WebhooksCommand::Deliveries(a) => {
            let input = ListDeliveriesInput {
                webhook_id: a.webhook_id,
                status: a.status,
                before_id: a.before_id,
                limit: a.limit,
            };
            if json {
                return print_call(
                    &client,
                    "webhooks.deliveries",
                    &input,
                    &CallOptions::default(),
                )
                .await;
            }
            let now = Timestamp::now().unix();
            let items = client.webhooks().deliveries(input).await?;
            tabulate(
                items,
                &[
                    "ID",
                    "WEBHOOK",
                    "EVENT TYPE",
                    "STATUS",
                    "ATTEMPTS",
                    "LAST ANSWER",
                    "LATENCY",
                    "CREATED",
                    "NEXT ATTEMPT",
                    "LAST ERROR",
                ],
                |d| {
                    vec![
                        d.id,
                        d.webhook_id,
                        d.event_type,
                        status_name(d.status).to_owned(),
                        d.attempts.to_string(),
                        output::or(d.last_status, "-"),
                        latency(d.last_latency_ms),
                        output::relative(d.created_at, now),
                        output::when(d.next_attempt_at, now, "-"),
                        output::or(d.last_error, "-"),
                    ]
                },
            )
            .await
        }
        WebhooksCommand::Redeliver(a) => {
            let options = idempotent(a.idempotency_key);
            let input = RedeliverInput {
                delivery_id: one_id(a.delivery.delivery_id, a.delivery.delivery_id_flag),
            };
            if json {
                return print_call(&client, "webhooks.redeliver", &input, &options).await;
            }
            let delivery = handle(&options).redeliver(input).await?;
            print_delivery(&mut io::stdout().lock(), &delivery)
        }
    }
}

/// Refuses a `--url` given after `webhooks <subcommand>`: clap takes it for the gateway's URL (a global
/// flag), but whoever writes `opgate webhooks update wh_... --url https://...` means the endpoint's, and the
/// call, token included, would go to the receiver.
fn refuse_url_after(subcommand: &str) -> Result<(), Exit> {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if url_after(&argv, subcommand) {
        return Err(Exit(
            EXIT_USAGE,
            format!(
                "`--url` is the gateway's URL, not the endpoint's: give the endpoint's with `--webhook-url`, \
                 and the gateway's in OPGATE_URL or before the subcommand (`opgate webhooks --url <gateway> \
                 {subcommand} ...`)"
            ),
        ));
    }
    Ok(())
}

/// Whether `argv` has `--url` after `webhooks <subcommand>` (before any `--`).
fn url_after(argv: &[String], subcommand: &str) -> bool {
    let Some(resource) = argv.iter().position(|a| a == "webhooks") else {
        return false;
    };
    let rest = &argv[resource + 1..];
    let Some(sub) = rest.iter().position(|a| a == subcommand) else {
        return false;
    };
    rest[sub + 1..]
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--url" || a.starts_with("--url="))
}

/// `enabled` or `disabled`, for the table.
fn status(enabled: bool) -> &'static str {
    if enabled {
        "enabled"
    } else {
        "disabled"
    }
}

/// Event types for humans: `a,b`, or `all` when the endpoint gets every type.
fn event_types(types: &[EventType]) -> String {
    if types.is_empty() {
        "all".to_owned()
    } else {
        types
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A latency in milliseconds (`12ms`), or `-` when no attempt got that far.
fn latency(ms: Option<u32>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms"))
}

/// An endpoint and its new signing secret (first: it is what the caller must store now).
fn print_with_secret(out: &WebhookWithSecret) -> Result<(), Exit> {
    print_details(
        &mut io::stdout().lock(),
        &out.webhook,
        &[("secret", out.secret.clone())],
    )
}

/// An endpoint as `field  value` lines, after `first` (the secret, when there is one).
fn print_details(
    out: &mut impl Write,
    w: &WebhookDetails,
    first: &[(&str, String)],
) -> Result<(), Exit> {
    let now = Timestamp::now().unix();
    let mut pairs: Vec<(&str, String)> = first.to_vec();
    pairs.extend([
        ("id", w.id.clone()),
        ("url", w.url.clone()),
        ("description", output::or(w.description.as_deref(), "-")),
        ("event_types", event_types(&w.event_types)),
        ("enabled", w.enabled.to_string()),
        ("mode", w.mode.as_str().to_owned()),
        ("org_id", w.org_id.clone()),
        ("created_by", w.created_by.clone()),
        (
            "created_at",
            output::when_exact(Some(w.created_at), now, "-"),
        ),
        (
            "updated_at",
            output::when_exact(Some(w.updated_at), now, "-"),
        ),
    ]);
    if !w.enabled || w.disabled_at.is_some() {
        pairs.push(("disabled_at", output::when_exact(w.disabled_at, now, "-")));
        pairs.push((
            "disabled_reason",
            output::or(w.disabled_reason.as_deref(), "-"),
        ));
    }
    output::fields(out, &pairs)?;
    Ok(())
}

/// A delivery as `field  value` lines.
fn print_delivery(out: &mut impl Write, d: &DeliveryDetails) -> Result<(), Exit> {
    let now = Timestamp::now().unix();
    let keys: Vec<String> = (1..=d.history.len())
        .map(|n| format!("attempt_{n}"))
        .collect();
    let mut pairs = vec![
        ("id", d.id.clone()),
        ("webhook_id", d.webhook_id.clone()),
        ("event_id", d.event_id.clone()),
        ("event_type", d.event_type.clone()),
        ("status", status_name(d.status).to_owned()),
        ("attempts", d.attempts.to_string()),
        (
            "next_attempt_at",
            output::when_exact(d.next_attempt_at, now, "-"),
        ),
        ("last_status", output::or(d.last_status, "-")),
        ("last_error", output::or(d.last_error.as_deref(), "-")),
        ("last_latency_ms", output::or(d.last_latency_ms, "-")),
        (
            "created_at",
            output::when_exact(Some(d.created_at), now, "-"),
        ),
        ("finished_at", output::when_exact(d.finished_at, now, "-")),
    ];
    for (key, a) in keys.iter().zip(&d.history) {
        let answer = output::or(a.status, "no answer");
        let outcome = a.error.clone().unwrap_or_else(|| "delivered".to_owned());
        let when = output::when_exact(Some(a.at), now, "-");
        pairs.push((
            key,
            format!("{when}  {answer}  {}  {outcome}", latency(a.latency_ms)),
        ));
    }
    output::fields(out, &pairs)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn a_url_after_create_or_update_is_found() {
        for line in [
            "opgate webhooks update wh_1 --url https://hooks.example.com/x",
            "opgate webhooks --json update --url=https://hooks.example.com/x wh_1",
            "opgate webhooks --url http://gw:8080 update wh_1 --enabled --url http://other",
        ] {
            assert!(url_after(&argv(line), "update"), "{line}");
        }
        for line in [
            "opgate webhooks --url http://gw:8080 update wh_1 --webhook-url https://h/x",
            "opgate webhooks update wh_1 --webhook-url https://h/x",
            "opgate webhooks update wh_1 -- --url",
            "opgate webhooks --url http://gw:8080 create --webhook-url https://h/x",
        ] {
            assert!(!url_after(&argv(line), "update"), "{line}");
        }
        assert!(url_after(
            &argv("opgate webhooks create --url https://h/x"),
            "create"
        ));
    }

    #[test]
    fn event_types_parse_by_wire_name() {
        let parsed = parse_event_types("api_key.created, api_key.revoked,").unwrap();
        assert_eq!(
            parsed.0,
            [EventType::ApiKeyCreated, EventType::ApiKeyRevoked]
        );
        assert!(parse_event_types("").unwrap().0.is_empty());
        let e = parse_event_types("api_key.created,key.made").err().unwrap();
        assert!(e.starts_with("`key.made` is not an event type (possible values: api_key.created,"));
    }
}
