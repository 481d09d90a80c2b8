//! The mailer: delivers the catalog's outbox over SMTP when a relay is configured.
//!
//! Mail is written to the outbox in the transaction that caused it (a share sent, a share
//! revoked), so nothing is lost when the relay is down or segmart stops: the mailer retries a
//! failed message with a growing pause (1 min, 2 min, 4 min … up to an hour) until the relay takes
//! it. Without a relay the outbox is the mailbox: the operator reads it with
//! `GET /admin/outbox` or `segmart admin outbox`.
//!
//! The SMTP client speaks plain RFC 5321 (EHLO, MAIL, RCPT, DATA) to a relay on a trusted
//! network, typically the host's own MTA; it does not do TLS or authentication.

use std::time::Duration;

use segmart_domain::Timestamp;
use segmart_storage::sharing_catalog::{Mail, OutboxEntry};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::state::SharedState;

/// Where and as whom mail is sent.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// `host:port` of the relay.
    pub relay: String,
    /// The sender address.
    pub from: String,
}

const TIMEOUT: Duration = Duration::from_secs(15);

async fn reply(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Result<u16, String> {
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading the relay's reply: {e}"))?;
        if n == 0 {
            return Err("the relay closed the connection".into());
        }
        if line.len() < 4 {
            return Err(format!("malformed reply {line:?}"));
        }
        let code: u16 = line[..3]
            .parse()
            .map_err(|_| format!("malformed reply {line:?}"))?;
        if line.as_bytes()[3] != b'-' {
            return Ok(code);
        }
    }
}

async fn expect(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    ok: &[u16],
    step: &str,
) -> Result<(), String> {
    let code = reply(reader).await?;
    if ok.contains(&code) {
        Ok(())
    } else {
        Err(format!("the relay answered {code} to {step}"))
    }
}

fn clean_header(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

/// Sends one message. `Err` carries what went wrong.
pub async fn send(settings: &SmtpSettings, mail: &Mail, now: Timestamp) -> Result<(), String> {
    tokio::time::timeout(TIMEOUT, send_inner(settings, mail, now))
        .await
        .map_err(|_| "the relay did not answer in time".to_string())?
}

async fn send_inner(settings: &SmtpSettings, mail: &Mail, now: Timestamp) -> Result<(), String> {
    let stream = TcpStream::connect(&settings.relay)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", settings.relay))?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    expect(&mut reader, &[220], "the greeting").await?;
    let mut say = async |line: String, ok: &[u16], step: &str| -> Result<(), String> {
        write
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("writing to the relay: {e}"))?;
        expect(&mut reader, ok, step).await
    };
    say("EHLO segmart\r\n".into(), &[250], "EHLO").await?;
    say(
        format!("MAIL FROM:<{}>\r\n", clean_header(&settings.from)),
        &[250],
        "MAIL FROM",
    )
    .await?;
    say(
        format!("RCPT TO:<{}>\r\n", clean_header(&mail.to)),
        &[250, 251],
        "RCPT TO",
    )
    .await?;
    say("DATA\r\n".into(), &[354], "DATA").await?;
    let date = time::OffsetDateTime::from_unix_timestamp(now.secs())
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_default();
    let mut message = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        clean_header(&settings.from),
        clean_header(&mail.to),
        clean_header(&mail.subject)
    );
    for line in mail.body.lines() {
        // Dot-stuffing (RFC 5321 §4.5.2).
        if line.starts_with('.') {
            message.push('.');
        }
        message.push_str(line);
        message.push_str("\r\n");
    }
    message.push_str(".\r\n");
    say(message, &[250], "the message").await?;
    let _ = say("QUIT\r\n".into(), &[221], "QUIT").await;
    Ok(())
}

/// The pause before attempt `attempts + 1` of a failed message.
pub fn retry_after_secs(attempts: u32) -> i64 {
    60i64.saturating_mul(1 << attempts.min(6)).min(3600)
}

/// Delivers every message due now; returns how many were sent. Without a relay, nothing is
/// sent and the outbox keeps the mail for the operator.
pub async fn deliver_due(state: &SharedState) -> usize {
    let Some(smtp) = state.settings.smtp.clone() else {
        return 0;
    };
    let now = state.clock.now();
    let due: Vec<OutboxEntry> = match state.catalog.due_mail(now, 100).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox");
            return 0;
        }
    };
    let mut sent = 0;
    for entry in due {
        match send(&smtp, &entry.mail, now).await {
            Ok(()) => {
                sent += 1;
                if let Err(e) = state.catalog.mail_sent(entry.id, now).await {
                    tracing::warn!(error = %e, "cannot mark mail sent");
                }
            }
            Err(why) => {
                tracing::warn!(to = %entry.mail.to, error = %why, "mail not delivered; will retry");
                let retry = now.plus_secs(retry_after_secs(entry.attempts));
                if let Err(e) = state.catalog.mail_failed(entry.id, &why, retry).await {
                    tracing::warn!(error = %e, "cannot record the mail failure");
                }
            }
        }
    }
    sent
}

/// Runs [`deliver_due`] every `interval` until the task is aborted.
pub fn spawn_mailer(state: SharedState, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            deliver_due(&state).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_an_hour() {
        assert_eq!(retry_after_secs(0), 60);
        assert_eq!(retry_after_secs(1), 120);
        assert_eq!(retry_after_secs(5), 1920);
        assert_eq!(retry_after_secs(6), 3600);
        assert_eq!(retry_after_secs(40), 3600);
    }
}
