//! Email: the templates and the [`Mailer`] that sends what they render.
//!
//! Templates live in `email-templates/<name>/{subject.txt, body.txt, body.html}`, extending
//! `base.txt`/`base.html`. They are embedded in the binary (`include_str!`) and parsed once, at
//! start-up, into one [`tera::Tera`]; `.html` templates are autoescaped, `.txt` ones are not.
//!
//! The mailer sends over SMTP when `SMTP_URL` is set (lettre; `smtp://` is plain,
//! `?tls=required` STARTTLS, `smtps://` TLS, over rustls with Mozilla's roots). Without it, each
//! email is written as an `.eml` file to `EMAIL_OUTBOX_DIR`, so a newcomer can open what was
//! sent; production refuses that fallback.
//!
//! Error texts may quote addresses (servers often echo the recipient): [`EmailError::redacted`]
//! gives one safe to log and store.

use std::{path::PathBuf, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use lettre::{
    Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::config::{ConfigError, Settings};

/// Every template, embedded at build time: `(name, source)`.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.txt", include_str!("../../email-templates/base.txt")),
    ("base.html", include_str!("../../email-templates/base.html")),
    (
        "invitation/subject.txt",
        include_str!("../../email-templates/invitation/subject.txt"),
    ),
    (
        "invitation/body.txt",
        include_str!("../../email-templates/invitation/body.txt"),
    ),
    (
        "invitation/body.html",
        include_str!("../../email-templates/invitation/body.html"),
    ),
    (
        "password_reset/subject.txt",
        include_str!("../../email-templates/password_reset/subject.txt"),
    ),
    (
        "password_reset/body.txt",
        include_str!("../../email-templates/password_reset/body.txt"),
    ),
    (
        "password_reset/body.html",
        include_str!("../../email-templates/password_reset/body.html"),
    ),
    (
        "notification/subject.txt",
        include_str!("../../email-templates/notification/subject.txt"),
    ),
    (
        "notification/body.txt",
        include_str!("../../email-templates/notification/body.txt"),
    ),
    (
        "notification/body.html",
        include_str!("../../email-templates/notification/body.html"),
    ),
];

/// Longest an SMTP command may take. lettre's default (60 s) equals `send_invitation`'s attempt
/// timeout, so a stalled server would end the attempt as a timeout rather than an SMTP error.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why an email could not be rendered or sent.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// The mailer's settings are unusable (at start-up).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A template failed to parse or render (a bug in the templates).
    #[error("email template: {0}")]
    Template(#[from] tera::Error),
    /// The recipient's address is not valid (the address is not repeated here).
    #[error("invalid recipient address: {0}")]
    Address(#[from] lettre::address::AddressError),
    /// The message could not be built.
    #[error("building the message: {0}")]
    Message(#[from] lettre::error::Error),
    /// The SMTP server refused the message or could not be reached.
    #[error("smtp: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// The `.eml` file could not be written.
    #[error("writing to the email outbox: {0}")]
    Outbox(#[from] lettre::transport::file::Error),
    /// The outbox directory could not be created.
    #[error("creating the email outbox directory: {0}")]
    OutboxDir(#[source] std::io::Error),
}

impl EmailError {
    /// Whether trying again cannot help: the server refused for good (SMTP 5xx), or the message
    /// itself is bad. Unreachable servers, 4xx replies, timeouts and disk errors are transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            EmailError::Smtp(e) => e.is_permanent(),
            EmailError::Outbox(_) | EmailError::OutboxDir(_) => false,
            EmailError::Config(_)
            | EmailError::Template(_)
            | EmailError::Address(_)
            | EmailError::Message(_) => true,
        }
    }

    /// The error text with every address taken out, safe to log, keep on the job and audit.
    pub fn redacted(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let s_text = s.to_string();
            if !text.contains(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            source = s.source();
        }
        redact_addresses(&text)
    }
}

/// Replaces every word containing an `@` with `[address]`: SMTP replies often quote the
/// recipient (`550 5.1.1 <someone@example.com>: unknown user`).
pub fn redact_addresses(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|word| {
            let bare = word.trim_end();
            if bare.contains('@') {
                format!("[address]{}", &word[bare.len()..])
            } else {
                word.to_owned()
            }
        })
        .collect()
}

/// A rendered email. (No `Debug`: bodies carry secrets such as invitation links.)
pub struct Email {
    /// The subject (one line).
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

/// What the invitation email says. (No `Debug`: the link carries the token.)
#[derive(Serialize)]
pub struct InvitationEmail {
    /// Who invited, as the body names them (HTML-escaped there by the template).
    pub inviter_name: String,
    /// Who invited, as the subject names them: the name is the inviter's own free text, so the
    /// subject gets it on one line, without invisible or direction-changing characters, and at
    /// most [`SUBJECT_NAME_MAX`] characters ([`crate::domain::one_line`]).
    pub inviter_in_subject: String,
    /// The roles the invitee will hold.
    pub role_names: Vec<String>,
    /// `<INVITATION_ACCEPT_URL>?token=<token>` (by default
    /// `<APP_BASE_URL>/invitations/accept?token=<token>`, the API's own accept page).
    pub accept_url: String,
    /// When the link stops working, e.g. `21 December 2026 (UTC)`.
    pub expires_on: String,
}

/// The longest inviter name a subject carries (characters).
pub const SUBJECT_NAME_MAX: usize = 40;

/// The inviter's name when the inviter is unknown or has no name.
pub const UNKNOWN_INVITER: &str = "A teammate";

impl InvitationEmail {
    /// The email for an invitation; `accept_page` is the settings' `invitation_accept_url`.
    pub fn new(
        inviter_name: Option<&str>,
        role_names: Vec<String>,
        accept_page: &str,
        token: &str,
        expires_at: DateTime<Utc>,
    ) -> Self {
        let inviter_name = inviter_name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(UNKNOWN_INVITER)
            .to_owned();
        let inviter_in_subject = match crate::domain::one_line(&inviter_name, SUBJECT_NAME_MAX) {
            short if short.is_empty() => UNKNOWN_INVITER.to_owned(),
            short => short,
        };
        Self {
            inviter_name,
            inviter_in_subject,
            role_names,
            accept_url: crate::config::link_with_token(accept_page, token),
            expires_on: expires_at.format("%-d %B %Y (UTC)").to_string(),
        }
    }
}

/// What the password-reset email says. (No `Debug`: it carries the token.)
#[derive(Serialize)]
pub struct PasswordResetEmail {
    /// The one-time token, for `POST /api/v1/auth/password-reset/confirm`.
    pub token: String,
    /// `<PASSWORD_RESET_URL>?token=<token>`, when a page for it is configured.
    pub reset_url: Option<String>,
    /// How long the token works, e.g. `60 minutes`.
    pub valid_for: String,
    /// The project's name (the account the reset is for).
    pub project_name: String,
}

impl PasswordResetEmail {
    /// The email for a reset token valid for `valid_for`.
    pub fn new(
        token: &str,
        reset_page: Option<&str>,
        valid_for: std::time::Duration,
        project_name: &str,
    ) -> Self {
        Self {
            token: token.to_owned(),
            reset_url: reset_page.map(|p| crate::config::link_with_token(p, token)),
            valid_for: format!("{} minutes", valid_for.as_secs().div_ceil(60)),
            project_name: project_name.to_owned(),
        }
    }
}

/// What a notification's email says. Title and body were rendered from the rule's templates
/// over the event (text written by the project and by whoever sent the event): the subject gets
/// the title on one line, without invisible characters, at most [`SUBJECT_TITLE_MAX`]
/// characters; the HTML body escapes everything.
#[derive(Serialize)]
pub struct NotificationEmail {
    /// The title, in full.
    pub title: String,
    /// The title as the subject carries it.
    pub title_in_subject: String,
    /// `High` for a priority above zero, nothing otherwise.
    pub priority_label: Option<&'static str>,
    /// The body.
    pub body: String,
    /// The event's type (none for a digest or a notice).
    pub event_type: Option<String>,
    /// The event's source.
    pub event_source: Option<String>,
    /// When the event happened, e.g. `2 December 2026 10:00 UTC`.
    pub occurred_at: Option<String>,
    /// The rule's name.
    pub rule_name: Option<String>,
    /// `<APP_BASE_URL>/notifications/<id>`.
    pub link: String,
}

/// The longest title a notification email's subject carries (characters).
pub const SUBJECT_TITLE_MAX: usize = 120;

/// What a notification email needs to say (see [`NotificationEmail::new`]).
#[derive(Debug, Clone, Copy)]
pub struct NotificationFields<'a> {
    /// The notification.
    pub notification_id: uuid::Uuid,
    /// Title.
    pub title: &'a str,
    /// Body.
    pub body: &'a str,
    /// Priority (above zero reads `High`).
    pub priority: i32,
    /// The event's type.
    pub event_type: Option<&'a str>,
    /// The event's source.
    pub event_source: Option<&'a str>,
    /// When the event happened.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The rule's name.
    pub rule_name: Option<&'a str>,
}

impl NotificationEmail {
    /// The email for a notification; `app_base_url` has no trailing slash.
    pub fn new(n: NotificationFields<'_>, app_base_url: &str) -> Self {
        let title_in_subject = match crate::domain::one_line(n.title, SUBJECT_TITLE_MAX) {
            short if short.is_empty() => "Alert from Comet".to_owned(),
            short => short,
        };
        Self {
            title: n.title.to_owned(),
            title_in_subject,
            priority_label: (n.priority > 0).then_some("High"),
            body: n.body.to_owned(),
            event_type: n.event_type.map(str::to_owned),
            event_source: n.event_source.map(str::to_owned),
            occurred_at: n
                .occurred_at
                .map(|t| t.format("%-d %B %Y %H:%M UTC").to_string()),
            rule_name: n.rule_name.map(str::to_owned),
            link: format!("{app_base_url}/notifications/{}", n.notification_id),
        }
    }
}

/// The parsed templates.
pub struct Templates {
    tera: tera::Tera,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("count", &TEMPLATES.len())
            .finish()
    }
}

impl Templates {
    /// Parses the embedded templates; `app_url` is available to all of them as `app_url`.
    pub fn load(app_url: &str) -> Result<Self, EmailError> {
        let mut tera = tera::Tera::new();
        tera.autoescape_on([".html"]);
        tera.add_raw_templates(TEMPLATES.iter().copied())?;
        tera.global_context().insert("app_url", app_url);
        Ok(Self { tera })
    }

    /// Renders `<name>/subject.txt`, `<name>/body.txt` and `<name>/body.html`.
    pub fn render(&self, name: &str, context: &impl Serialize) -> Result<Email, EmailError> {
        let context = tera::Context::from_serialize(context)?;
        let subject = self
            .tera
            .render(&format!("{name}/subject.txt"), &context)?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Email {
            subject,
            text: self.tera.render(&format!("{name}/body.txt"), &context)?,
            html: self.tera.render(&format!("{name}/body.html"), &context)?,
        })
    }

    /// Renders the invitation email.
    pub fn invitation(&self, email: &InvitationEmail) -> Result<Email, EmailError> {
        self.render("invitation", email)
    }

    /// Renders the password-reset email.
    pub fn password_reset(&self, email: &PasswordResetEmail) -> Result<Email, EmailError> {
        self.render("password_reset", email)
    }

    /// Renders a notification's email.
    pub fn notification(&self, email: &NotificationEmail) -> Result<Email, EmailError> {
        self.render("notification", email)
    }
}

/// Where a sent email went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Accepted by the SMTP server, with its reply (`250 …`, addresses redacted).
    Smtp(String),
    /// Written to this `.eml` file.
    Outbox(PathBuf),
}

enum Backend {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox {
        transport: AsyncFileTransport<Tokio1Executor>,
        dir: PathBuf,
    },
}

struct Inner {
    templates: Templates,
    from: Mailbox,
    backend: Backend,
}

/// Renders and sends emails. Cheap to clone; built once from the settings.
#[derive(Clone)]
pub struct Mailer(Arc<Inner>);

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the SMTP URL: it may carry credentials
        f.debug_struct("Mailer")
            .field("backend", &self.describe())
            .finish()
    }
}

impl Mailer {
    /// The mailer `SMTP_URL`, `FROM_EMAIL` and `EMAIL_OUTBOX_DIR` describe. Fails on a malformed
    /// URL or sender, or on the file outbox in production.
    pub fn from_settings(settings: &Settings) -> Result<Self, EmailError> {
        let email = &settings.email;
        let from: Mailbox = email.from.parse().map_err(|e| ConfigError::Invalid {
            name: "FROM_EMAIL",
            reason: format!("{e}"),
        })?;
        let backend = match &email.smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|e| ConfigError::Invalid {
                        name: "SMTP_URL",
                        // lettre's message names the scheme or TLS mode, never the credentials
                        reason: e.to_string(),
                    })?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                Backend::Smtp(transport)
            }
            None if settings.is_production() => {
                return Err(ConfigError::Invalid {
                    name: "SMTP_URL",
                    reason: "is required in production (the file outbox is for development)".into(),
                }
                .into());
            }
            None => {
                // created on first send, so processes that never email leave no directory
                let dir = PathBuf::from(&email.outbox_dir);
                Backend::Outbox {
                    transport: AsyncFileTransport::<Tokio1Executor>::new(&dir),
                    dir,
                }
            }
        };
        Ok(Self(Arc::new(Inner {
            templates: Templates::load(&settings.users.app_base_url)?,
            from,
            backend,
        })))
    }

    /// The parsed templates.
    pub fn templates(&self) -> &Templates {
        &self.0.templates
    }

    /// Where emails go, for the start-up log: `smtp` or `outbox <dir>`.
    pub fn describe(&self) -> String {
        match &self.0.backend {
            Backend::Smtp(_) => "smtp".into(),
            Backend::Outbox { dir, .. } => format!("outbox {}", dir.display()),
        }
    }

    /// The `Message-ID` for `local`: `<local@domain of FROM_EMAIL>`. Deterministic, so an email
    /// sent again after a crash (between the server's 250 and recording it) carries the same id
    /// and can be recognised downstream.
    pub fn message_id(&self, local: &str) -> String {
        format!("<{local}@{}>", self.0.from.email.domain())
    }

    /// Sends an email (multipart: plain text and HTML) to one address, with the `Message-ID`
    /// [`Mailer::message_id`] makes of `message_id` (the same for every send of one message).
    pub async fn send(
        &self,
        to: &str,
        email: &Email,
        message_id: &str,
    ) -> Result<Sent, EmailError> {
        let to: Address = to.parse()?;
        let message = Message::builder()
            .message_id(Some(self.message_id(message_id)))
            .from(self.0.from.clone())
            .to(Mailbox::new(None, to))
            .subject(email.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))?;
        match &self.0.backend {
            Backend::Smtp(transport) => {
                let reply = transport.send(message).await?;
                let text = format!(
                    "{} {}",
                    reply.code(),
                    reply.message().collect::<Vec<_>>().join(" ")
                );
                Ok(Sent::Smtp(redact_addresses(&text)))
            }
            Backend::Outbox { transport, dir } => {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(EmailError::OutboxDir)?;
                let id = transport.send(message).await?;
                Ok(Sent::Outbox(dir.join(format!("{id}.eml"))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn invitation(inviter: Option<&str>) -> InvitationEmail {
        InvitationEmail::new(
            inviter,
            vec!["admin".into(), "member".into()],
            "https://comet.example/invitations/accept",
            "tok_EN-abc",
            Utc.with_ymd_and_hms(2026, 12, 21, 10, 0, 0).unwrap(),
        )
    }

    #[test]
    fn the_invitation_renders_subject_text_and_html_with_its_details() {
        let t = Templates::load("https://comet.example").unwrap();
        let e = t.invitation(&invitation(Some("Ada Lovelace"))).unwrap();
        assert_eq!(e.subject, "Ada Lovelace invited you to Comet");
        let link = "https://comet.example/invitations/accept?token=tok_EN-abc";
        for body in [&e.text, &e.html] {
            assert!(body.contains("Ada Lovelace"), "{body}");
            assert!(body.contains("admin, member"), "{body}");
            assert!(body.contains(link), "{body}");
            assert!(body.contains("21 December 2026 (UTC)"), "{body}");
            assert!(body.contains("https://comet.example"), "{body}");
        }
        assert!(e.html.contains(&format!("href=\"{link}\"")), "{}", e.html);
        assert!(!e.text.contains('<'), "{}", e.text);
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let t = Templates::load("https://comet.example").unwrap();
        let e = t.invitation(&invitation(Some("<b>Eve</b> & co"))).unwrap();
        assert!(
            e.html.contains("&lt;b&gt;Eve&lt;/b&gt; &amp; co"),
            "{}",
            e.html
        );
        assert!(!e.html.contains("<b>Eve"), "{}", e.html);
        assert!(e.text.contains("<b>Eve</b> & co"), "{}", e.text);
        assert!(e.subject.contains("<b>Eve</b> & co"));
    }

    #[test]
    fn the_subject_gets_the_inviters_name_short_and_without_invisible_characters() {
        let t = Templates::load("https://comet.example").unwrap();
        let long = "Your account is locked: reset it now at https://evil.example/reset ok";
        let e = t.invitation(&invitation(Some(long))).unwrap();
        assert_eq!(
            e.subject,
            "Your account is locked: reset it now at… invited you to Comet"
        );
        // the body still names the inviter in full
        assert!(e.text.contains(long), "{}", e.text);

        // a right-to-left override would make the rest of the subject read backwards
        let e = t
            .invitation(&invitation(Some("Eve\u{202E}\u{200B} Smith")))
            .unwrap();
        assert_eq!(e.subject, "Eve Smith invited you to Comet");
        let e = t.invitation(&invitation(Some("\u{200B}\u{FEFF}"))).unwrap();
        assert_eq!(e.subject, "A teammate invited you to Comet");
    }

    #[test]
    fn an_unknown_or_unnamed_inviter_is_a_teammate_and_no_roles_reads_well() {
        let t = Templates::load("http://localhost:8080").unwrap();
        for inviter in [None, Some("  ")] {
            let mut i = invitation(inviter);
            i.role_names.clear();
            let e = t.invitation(&i).unwrap();
            assert_eq!(e.subject, "A teammate invited you to Comet");
            assert!(e.text.contains("join their team on Comet.\n"), "{}", e.text);
        }
    }

    #[test]
    fn the_reset_email_carries_the_token_and_links_only_to_a_configured_page() {
        let t = Templates::load("https://comet.example").unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let e = t
            .password_reset(&PasswordResetEmail::new(
                "tok_R-1",
                None,
                hour,
                "Acme <ops>",
            ))
            .unwrap();
        assert_eq!(e.subject, "Reset your Comet password");
        for body in [&e.text, &e.html] {
            assert!(body.contains("tok_R-1"), "{body}");
            assert!(body.contains("60 minutes"), "{body}");
            assert!(!body.contains("?token="), "no page configured: {body}");
        }
        assert!(e.html.contains("Acme &lt;ops&gt;"), "{}", e.html);
        let page = Some("https://dash.example/reset?from=mail");
        let e = t
            .password_reset(&PasswordResetEmail::new("tok_R-1", page, hour, "Acme"))
            .unwrap();
        let link = "https://dash.example/reset?from=mail&token=tok_R-1";
        assert!(e.text.contains(link), "{}", e.text);
        // escaped in the HTML part (`&` and `/`), as every value there
        assert!(
            e.html.contains("from=mail&amp;token=tok_R-1\""),
            "{}",
            e.html
        );
    }

    #[test]
    fn addresses_are_redacted_from_error_texts() {
        assert_eq!(
            redact_addresses("permanent error (550): 5.1.1 <grace@example.com>: unknown user"),
            "permanent error (550): 5.1.1 [address] unknown user"
        );
        assert_eq!(
            redact_addresses("451 4.3.0 try later"),
            "451 4.3.0 try later"
        );
    }
}
