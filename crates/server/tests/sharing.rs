//! Sharing end to end over HTTP: share → key → send → activate (by key and by link) →
//! campaign → revoke → campaigns stopped → e-mail received by a real SMTP server; usage after
//! revocation refused; and a cross-tenant matrix of forbidden reads and writes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{OPERATOR_TOKEN, Options, Tenant, TestServer, USER_PASSWORD as PASSWORD};
use reqwest::StatusCode;
use segmart_domain::IdType;
use segmart_server::mail::{SmtpSettings, deliver_due};
use segmart_server::ops;
use segmart_storage::billing_catalog::{BuyerKind, UserRole};
use serde_json::{Value, json};

/// Python's aiosmtpd, started by the test on a free port; it prints every message it receives.
struct SmtpServer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl SmtpServer {
    fn start(port: u16) -> SmtpServer {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (pip install aiosmtpd) starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        SmtpServer { child, lines }
    }

    /// Everything received until a line containing `marker` (bounded wait).
    fn received_until(&self, marker: &str) -> String {
        let mut text = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                text.push_str(&line);
                text.push('\n');
                if line.contains(marker) {
                    return text;
                }
            }
        }
        panic!("the SMTP server never received {marker:?}; got:\n{text}");
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the SMTP server did not start listening (it is `python3 -m aiosmtpd`: install it with `python3 -m pip install aiosmtpd`)"
    );
}

struct Owner {
    tenant: Tenant,
    session: String,
    segments: Vec<u32>,
}

async fn owner(server: &TestServer, name: &str, keys: &[&str]) -> Owner {
    let tenant = server.tenant(IdType::Cookie).await;
    let username = format!("{name}-owner");
    server.provider_user(&tenant, &username).await;
    let segments = server.create_segments(&tenant, keys).await;
    let (session, _) = server.session(&username).await;
    Owner {
        tenant,
        session,
        segments,
    }
}

struct BuyerUser {
    id: i64,
    session: String,
    cookie: String,
}

async fn buyer(server: &TestServer, name: &str, kind: BuyerKind) -> BuyerUser {
    let catalog = server.state.catalog.as_ref();
    let b = catalog
        .create_buyer(name, kind, server.state.clock.now())
        .await
        .unwrap();
    ops::create_user(
        catalog,
        server.state.clock.as_ref(),
        name,
        PASSWORD,
        UserRole::Buyer(b.id),
    )
    .await
    .unwrap();
    catalog
        .set_user_email(name, Some(&format!("{name}@example.test")))
        .await
        .unwrap();
    let (session, cookie) = server.session(name).await;
    BuyerUser {
        id: b.id,
        session,
        cookie,
    }
}

#[tokio::test]
async fn share_send_activate_campaign_revoke_and_the_mail_arrives() {
    let port = free_port();
    let server = TestServer::start_with(Options {
        smtp: Some(SmtpSettings {
            relay: format!("127.0.0.1:{port}"),
            from: "segmart@example.test".into(),
        }),
        ..Options::default()
    })
    .await;
    let acme = owner(&server, "acme", &["golf", "tennis", "chess"]).await;
    let ann = buyer(&server, "ann", BuyerKind::Advertiser).await;
    let bob = buyer(&server, "bob", BuyerKind::Advertiser).await;
    let eve = buyer(&server, "eve", BuyerKind::Advertiser).await;
    let agency = buyer(&server, "agency", BuyerKind::Agency).await;

    // A private share of two segments at a fixed CPM, sent to ann and bob.
    let (status, share) = server
        .post(
            "/shares",
            &acme.session,
            json!({"segments": [acme.segments[0], acme.segments[1]], "cpm": 0.5,
                   "currency": "USD", "recipients": ["ann", "bob"], "send": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{share}");
    let key = share["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("shk_") && key.len() > 40);
    assert_eq!(share["access"], json!(["ann", "bob"]));
    assert_eq!(
        share["notified"],
        json!(["ann@example.test", "bob@example.test"])
    );
    let link = share["activationLink"].as_str().unwrap().to_owned();
    assert!(link.ends_with(&format!("/activate?key={key}")));
    // The owner's table names the key by its label, never the key itself.
    let (_, table) = server.get("/shares", &acme.session).await;
    assert!(!table.to_string().contains(&key));
    assert_eq!(table["shares"][0]["keyLabel"], share["keyLabel"]);

    // The relay is down at first: the mail stays queued and is retried, not lost.
    assert_eq!(deliver_due(&server.state).await, 0);
    let (_, outbox) = server.get("/admin/outbox", OPERATOR_TOKEN).await;
    let first = &outbox["mail"][0];
    assert_eq!(first["attempts"], 1);
    assert!(
        first["lastError"]
            .as_str()
            .unwrap()
            .contains("cannot connect")
    );
    assert!(first["sentAt"].is_null());
    let smtp = SmtpServer::start(port);
    wait_for_port(port).await;
    assert_eq!(
        deliver_due(&server.state).await,
        0,
        "not due before the pause"
    );
    server.clock.advance_secs(60);
    assert_eq!(deliver_due(&server.state).await, 2);
    let received = smtp.received_until(&format!("/activate?key={key}"));
    assert!(
        received.contains("acme") || received.contains("Acme"),
        "{received}"
    );

    // ann activates by opening the link and confirming (cookie session); twice is harmless.
    let page = server.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Confirm"));
    for _ in 0..2 {
        let confirmed = server
            .http
            .post(server.url("/activate"))
            .header("cookie", ann.cookie.clone())
            .form(&[("key", key.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(confirmed.status(), StatusCode::OK);
        assert!(confirmed.text().await.unwrap().contains("Access activated"));
    }
    // bob activates by key.
    let (status, body) = server
        .post("/buyer/activations", &bob.session, json!({"key": key}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["alreadyActive"], false);
    // eve was not named; the agency may not activate anything.
    let (status, _) = server
        .post("/buyer/activations", &eve.session, json!({"key": key}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = server
        .post("/buyer/activations", &agency.session, json!({"key": key}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["message"].as_str().unwrap().contains("agency"));
    let (status, _) = server
        .post(
            "/buyer/activations",
            &bob.session,
            json!({"key": "shk_wrong"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // 1 234 users in golf, 3 in tennis.
    let batch: Vec<Value> = (0..1234)
        .map(|i| {
            let segments = if i < 3 {
                json!(["golf", "tennis"])
            } else {
                json!(["golf"])
            };
            json!({"profileId": format!("user-{i}"), "segmentIdsToAdd": segments})
        })
        .collect();
    let (status, body) = server
        .post(
            &acme.tenant.profiles_path(),
            &acme.tenant.token,
            json!(batch),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // External segments: names, prices, access; no user ids, no memberships.
    let (_, external) = server.get("/buyer/segments", &ann.session).await;
    let list = external["segments"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{external}");
    assert_eq!(list[0]["name"], "golf people");
    assert_eq!(list[0]["access"], "shared");
    assert_eq!(list[0]["shareCpm"]["cpm"], 0.5);
    assert_eq!(
        list[0]["size"], 1200,
        "rounded down to two significant digits"
    );
    assert!(list[1]["size"].is_null(), "small audiences show no size");
    assert!(!external.to_string().contains("user-"), "no user ids");
    let (_, nothing) = server.get("/buyer/segments", &eve.session).await;
    assert_eq!(nothing["segments"], json!([]));

    // Campaigns: only usable segments.
    let (status, campaign) = server
        .post(
            "/buyer/campaigns",
            &ann.session,
            json!({"name": "Golf in spring", "audience": {"include": [acme.segments[0]],
                   "exclude": [acme.segments[1]], "match": "any"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    assert_eq!(campaign["status"], "active");
    let (status, body) = server
        .post(
            "/buyer/campaigns",
            &ann.session,
            json!({"name": "Chess", "audience": {"include": [acme.segments[2]]}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "audience.include[0]");
    let (status, bob_campaign) = server
        .post(
            "/buyer/campaigns",
            &bob.session,
            json!({"name": "Tennis", "audience": {"include": [acme.segments[1]]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // The bidder meters ann's usage with the share's CPM on top.
    let catalog = server.state.catalog.as_ref();
    let bidder = ops::create_bidder(catalog, server.state.clock.as_ref(), "rtb")
        .await
        .unwrap();
    server.state.billing.reload(catalog).await.unwrap();
    let now = time::OffsetDateTime::from_unix_timestamp(server.state.clock.now().secs())
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let event = |id: &str, buyer: i64| {
        json!({"events": [{"impressionId": id, "time": now, "buyerId": buyer, "campaignId": 1,
                           "mediaCost": 0.01, "mediaCurrency": "USD",
                           "segments": [acme.segments[0]]}]})
    };
    let (_, metered) = server
        .post("/bidder/usage", &bidder.token, event("before", ann.id))
        .await;
    assert_eq!(metered["recorded"], 1, "{metered}");
    assert_eq!(
        metered["events"][0]["dataCost"], 0.0005,
        "0.50 USD share CPM"
    );
    let (_, refused) = server
        .post("/bidder/usage", &bidder.token, event("eve-1", eve.id))
        .await;
    assert_eq!(refused["rejected"], 1, "eve has no access: {refused}");

    // Revocation stops every recipient campaign using the data and tells each buyer.
    let share_id = share["id"].as_i64().unwrap();
    let (status, revoked) = server
        .delete(&format!("/shares/{share_id}"), &acme.session)
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    let affected = revoked["affected"].as_array().unwrap();
    assert_eq!(affected.len(), 2);
    let (_, c) = server
        .get(
            &format!("/buyer/campaigns/{}", campaign["id"]),
            &ann.session,
        )
        .await;
    assert_eq!(c["status"], "stopped");
    assert!(c["stoppedReason"].as_str().unwrap().contains("revoked"));
    let (_, c) = server
        .get(
            &format!("/buyer/campaigns/{}", bob_campaign["id"]),
            &bob.session,
        )
        .await;
    assert_eq!(c["status"], "stopped");
    // No usage of the revoked segments is accepted for those buyers any more.
    let (_, after) = server
        .post("/bidder/usage", &bidder.token, event("after", ann.id))
        .await;
    assert_eq!(after["rejected"], 1, "{after}");
    assert!(
        after["events"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    let (status, _) = server
        .post(
            &format!("/buyer/campaigns/{}/start", campaign["id"]),
            &ann.session,
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "cannot restart without access"
    );
    let (_, external) = server.get("/buyer/segments", &ann.session).await;
    assert_eq!(external["segments"], json!([]));
    // The revoked key activates nothing.
    let (status, _) = server
        .post("/buyer/activations", &eve.session, json!({"key": key}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The notices reach the SMTP server.
    assert_eq!(deliver_due(&server.state).await, 2);
    let received = smtp.received_until("Golf in spring");
    assert!(received.contains("ann@example.test"), "{received}");
    smtp.received_until("Tennis");
}

#[tokio::test]
async fn a_whole_source_covers_segments_added_later_and_owner_changes_reach_recipients() {
    let server = TestServer::start().await;
    let acme = owner(&server, "acme", &["a"]).await;
    let ann = buyer(&server, "ann", BuyerKind::Advertiser).await;
    let (status, share) = server
        .post(
            "/shares",
            &acme.session,
            json!({"source": acme.tenant.folder.id.to_string()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{share}");
    assert_eq!(share["access"], "public");
    let (status, _) = server
        .post(
            "/buyer/activations",
            &ann.session,
            json!({"key": share["key"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A segment created after the share is covered too.
    let (status, later) = server
        .post(
            &acme.tenant.segments_path(),
            &acme.tenant.token,
            json!({"segmentId": "later", "name": "Later"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    server
        .state
        .billing
        .reload(server.state.catalog.as_ref())
        .await
        .unwrap();
    let (_, external) = server.get("/buyer/segments", &ann.session).await;
    let names: Vec<&str> = external["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a people", "Later"]);
    // The owner renames it: the recipient sees the change at once.
    let (status, _) = server
        .put(
            &format!("{}/later", acme.tenant.segments_path()),
            &acme.tenant.token,
            json!({"name": "Later, renamed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, external) = server.get("/buyer/segments", &ann.session).await;
    assert_eq!(external["segments"][1]["name"], "Later, renamed");
    assert_eq!(external["segments"][1]["id"], later["id"]);
    // Revoked: ann had no campaign on it, and is told all the same.
    let (_, revoked) = server
        .delete(&format!("/shares/{}", share["id"]), &acme.session)
        .await;
    assert_eq!(revoked["affected"][0]["buyerId"], ann.id);
    assert_eq!(revoked["affected"][0]["stoppedCampaigns"], json!([]));
    let (_, outbox) = server.get("/admin/outbox", OPERATOR_TOKEN).await;
    assert_eq!(outbox["mail"][0]["to"], "ann@example.test");
    assert!(
        outbox["mail"][0]["body"]
            .as_str()
            .unwrap()
            .contains("None of your campaigns")
    );
}

#[tokio::test]
async fn every_cross_tenant_read_and_write_is_refused() {
    let server = TestServer::start().await;
    let acme = owner(&server, "acme", &["a1", "a2"]).await;
    let other = owner(&server, "other", &["o1"]).await;
    let ann = buyer(&server, "ann", BuyerKind::Advertiser).await;
    let bob = buyer(&server, "bob", BuyerKind::Advertiser).await;
    let (_, share) = server
        .post(
            "/shares",
            &acme.session,
            json!({"segments": [acme.segments[0]], "recipients": ["ann"]}),
        )
        .await;
    let share_id = share["id"].as_i64().unwrap();
    server
        .post(
            "/buyer/activations",
            &ann.session,
            json!({"key": share["key"]}),
        )
        .await;
    let (_, campaign) = server
        .post(
            "/buyer/campaigns",
            &ann.session,
            json!({"name": "Mine", "audience": {"include": [acme.segments[0]]}}),
        )
        .await;
    let campaign_path = format!("/buyer/campaigns/{}", campaign["id"]);

    // Another provider: cannot share acme's segments or source, revoke or see its shares.
    let (status, body) = server
        .post(
            "/shares",
            &other.session,
            json!({"segments": [acme.segments[1]]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "segments[0]");
    let (status, _) = server
        .post(
            "/shares",
            &other.session,
            json!({"source": acme.tenant.folder.id.to_string()}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server
        .delete(&format!("/shares/{share_id}"), &other.session)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, theirs) = server.get("/shares", &other.session).await;
    assert_eq!(theirs["shares"], json!([]));
    // Another buyer: cannot see or stop ann's campaign, nor use the private key.
    let (status, _) = server.get(&campaign_path, &bob.session).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .post(&format!("{campaign_path}/stop"), &bob.session, json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, bobs) = server.get("/buyer/campaigns", &bob.session).await;
    assert_eq!(bobs["campaigns"], json!([]));
    // Roles: buyers on provider APIs and providers on buyer APIs are refused.
    for (path, session) in [
        ("/shares", &ann.session),
        ("/buyer/segments", &acme.session),
        ("/buyer/campaigns", &acme.session),
        ("/segment-billing-category", &ann.session),
    ] {
        let (status, _) = server.get(path, session).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let (status, _) = server
        .post(
            "/shares",
            &ann.session,
            json!({"segments": [acme.segments[0]]}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A recipient cannot change, read profiles of, or list the shared segments' folder: a
    // session is not a provider's OAuth token.
    for path in [
        acme.tenant.segments_path(),
        format!("{}/a1", acme.tenant.segments_path()),
        acme.tenant.profile_path("some-user"),
    ] {
        let (status, _) = server.get(&path, &ann.session).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, _) = server
        .put(
            &format!("{}/a1", acme.tenant.segments_path()),
            &ann.session,
            json!({"name": "mine now"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Buyers never see user ids: nothing in their views names a profile.
    let (_, external) = server.get("/buyer/segments", &ann.session).await;
    let text = external.to_string();
    assert!(!text.contains("profile") && !text.contains("some-user"));
    // Without a session: 401 everywhere.
    for path in ["/shares", "/buyer/segments", "/buyer/campaigns"] {
        let (status, _) = server.get(path, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // The outbox is the operator's.
    let (status, _) = server.get("/admin/outbox", &acme.session).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn buyer_clients_get_tokens_with_buyer_permissions_only() {
    let server = TestServer::start().await;
    let acme = owner(&server, "acme", &["golf"]).await;
    let ann = buyer(&server, "ann", BuyerKind::Advertiser).await;
    let catalog = server.state.catalog.as_ref();
    let clock = server.state.clock.as_ref();
    let reader = ops::create_buyer_client(
        catalog,
        clock,
        ann.id,
        "reporting",
        segmart_domain::BuyerPermissions::parse_list("buyer_segments_read").unwrap(),
    )
    .await
    .unwrap();
    let full = ops::create_buyer_client(
        catalog,
        clock,
        ann.id,
        "trading desk",
        segmart_domain::BuyerPermissions::ALL,
    )
    .await
    .unwrap();
    let (_, share) = server
        .post(
            "/shares",
            &acme.session,
            json!({"segments": [acme.segments[0]]}),
        )
        .await;

    // A buyer client asks for buyer permissions; it gets no more than it holds.
    let reader_id = reader.client.id.to_string();
    let (status, body) = server
        .scoped_token(&reader_id, &reader.secret, "buyer:buyer_campaigns")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_scope");
    let (status, body) = server
        .scoped_token(
            &reader_id,
            &reader.secret,
            &format!("target-entity:{}:dmp_profile", server.target_entity()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "not a provider client: {body}"
    );
    let (status, body) = server
        .scoped_token(&reader_id, "wrong", "buyer:buyer_segments_read")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = server
        .scoped_token(&reader_id, &reader.secret, "buyer:buyer_segments_read")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 3599);
    let read_token = body["access_token"].as_str().unwrap().to_owned();
    // A provider client cannot get buyer permissions either.
    let (status, _) = server
        .scoped_token(
            &acme.tenant.client_id,
            &acme.tenant.client_secret,
            "buyer:buyer_segments_read",
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _) = server.get("/buyer/segments", &read_token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server
        .post(
            "/buyer/activations",
            &read_token,
            json!({"key": share["key"]}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "missing_permission");
    // The full client activates and builds a campaign, like a signed-in user.
    let (_, body) = server
        .scoped_token(
            &full.client.id.to_string(),
            &full.secret,
            "buyer:buyer_activate,buyer_campaigns,buyer_segments_read",
        )
        .await;
    let full_token = body["access_token"].as_str().unwrap().to_owned();
    let (status, _) = server
        .post(
            "/buyer/activations",
            &full_token,
            json!({"key": share["key"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .post(
            "/buyer/campaigns",
            &full_token,
            json!({"name": "API campaign", "audience": {"include": [acme.segments[0]]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, listed) = server.get("/buyer/campaigns", &ann.session).await;
    assert_eq!(listed["campaigns"][0]["name"], "API campaign");
    // Buyer tokens never reach provider APIs; provider tokens never reach buyer APIs.
    let (status, _) = server.get(&acme.tenant.segments_path(), &full_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server.get("/buyer/segments", &acme.tenant.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server.get("/shares", &full_token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Revoking the client ends its tokens at once; tokens expire.
    catalog.revoke_buyer_client(full.client.id).await.unwrap();
    let (status, _) = server.get("/buyer/segments", &full_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.clock.advance_secs(3599);
    let (status, body) = server.get("/buyer/segments", &read_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "expired_token");
}
