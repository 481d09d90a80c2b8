//! Billing end to end over HTTP: sign-in, the seed 002 transcripts (taxonomy, mapping create /
//! update / remove / view / paging), ownership errors, metering with every pricing rule, dedup,
//! unmapped segments, report visibility, and persistence across a restart.

mod common;

use common::{Options, Tenant, TestServer, USER_PASSWORD as PASSWORD};
use reqwest::StatusCode;
use segmart_domain::IdType;
use segmart_domain::Timestamp;
use segmart_domain::billing::{CurrencyCode, Price};
use segmart_domain::pricing::CostType;
use segmart_server::ops;
use segmart_storage::billing_catalog::{BuyerKind, UserRole};
use serde_json::{Value, json};

/// A provider tenant with a member, a publisher, categories, a sign-in user and segments.
struct Provider {
    tenant: Tenant,
    member_id: i64,
    /// FIX 2.00 USD CPM.
    fix_category: i64,
    /// RATE 10 %.
    rate_category: i64,
    /// FIX 90 RUB CPM.
    rub_category: i64,
    session: String,
    /// Segment key → platform id.
    segments: Vec<(String, u32)>,
}

impl Provider {
    fn seg(&self, key: &str) -> u32 {
        self.segments.iter().find(|(k, _)| k == key).unwrap().1
    }
}

async fn provider(server: &TestServer, name: &str, keys: &[&str]) -> Provider {
    let tenant = server.tenant(IdType::Cookie).await;
    let catalog = server.state.catalog.as_ref();
    let now = server.state.clock.now();
    let username = format!("{name}-user");
    let member_id = server.provider_user(&tenant, &username).await;
    catalog.set_revshare(member_id, 20.0, now).await.unwrap();
    let publisher = catalog
        .create_publisher(member_id, &format!("{name} publisher"), now)
        .await
        .unwrap();
    let price = |t, v, c| Price {
        cost_type: t,
        value: v,
        currency: c,
    };
    let fix = catalog
        .create_category(
            publisher.id,
            "Fix",
            price(CostType::Fix, 2.0, CurrencyCode::USD),
            now,
        )
        .await
        .unwrap();
    let rate = catalog
        .create_category(
            publisher.id,
            "Rate",
            price(CostType::Rate, 10.0, CurrencyCode::USD),
            now,
        )
        .await
        .unwrap();
    let rub = catalog
        .create_category(
            publisher.id,
            "Rub",
            price(CostType::Fix, 90.0, CurrencyCode::RUB),
            now,
        )
        .await
        .unwrap();
    let ids = server.create_segments(&tenant, keys).await;
    let segments = keys.iter().map(|key| key.to_string()).zip(ids).collect();
    let (session, _) = server.session(&username).await;
    Provider {
        tenant,
        member_id,
        fix_category: fix.id,
        rate_category: rate.id,
        rub_category: rub.id,
        session,
        segments,
    }
}

fn mapping(p: &Provider, segment: u32, category: i64) -> Value {
    json!({"segment-billing-category": {
        "active": true, "data_provider_id": p.member_id, "data_category_id": category,
        "segment_id": segment, "is_public": true, "data_segment_type_id": "Audience"
    }})
}

async fn map(server: &TestServer, p: &Provider, key: &str, category: i64) -> i64 {
    let (status, body) = server
        .post(
            &format!("/segment-billing-category?member_id={}", p.member_id),
            &p.session,
            mapping(p, p.seg(key), category),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["response"]["segment_billing_categories"][0]["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn the_seed_transcripts_run_with_a_cookie_session() {
    let server = TestServer::start().await;
    let p = provider(&server, "acme", &["s1", "s2", "s3"]).await;
    // Sign in again as curl -c would, and use only the cookie from now on.
    let (status, body, cookie) = server.sign_in("acme-user", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["status"], "OK");
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.starts_with("segmart_session="));
    let with_cookie = |method: reqwest::Method, path: &str| {
        server
            .http
            .request(method, server.url(path))
            .header("cookie", cookie.clone())
    };

    // View your pricing taxonomy.
    let tree: Value = with_cookie(reqwest::Method::GET, "/data-provider")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = &tree["response"];
    assert_eq!(r["status"], "OK");
    assert_eq!(r["count"], 1);
    assert_eq!(r["dbg_info"]["output_term"], "data-providers");
    let dp = &r["data-providers"][0];
    assert_eq!(dp["id"], p.member_id);
    assert_eq!(dp["member_id"], p.member_id);
    assert_eq!(dp["data_revshare_pct"], 20.0);
    let publisher = &dp["data_publishers"][0];
    assert_eq!(publisher["data_provider_id"], p.member_id);
    assert_eq!(publisher["level_index"], 0);
    let categories = publisher["data_categories"].as_array().unwrap();
    assert_eq!(categories.len(), 3);
    assert_eq!(categories[0]["id"], p.fix_category);
    assert_eq!(categories[0]["data_publisher_id"], publisher["id"]);

    // Create a mapping record (the seed's body, with this tenant's ids).
    let create = with_cookie(
        reqwest::Method::POST,
        &format!("/segment-billing-category?member_id={}", p.member_id),
    )
    .body(mapping(&p, p.seg("s1"), p.fix_category).to_string())
    .send()
    .await
    .unwrap();
    assert_eq!(create.status(), StatusCode::OK);
    let created: Value = create.json().await.unwrap();
    let record = &created["response"]["segment_billing_categories"][0];
    let id = record["id"].as_i64().unwrap();
    assert_eq!(record["segment_id"], p.seg("s1"));
    assert_eq!(record["data_provider_id"], p.member_id);
    assert_eq!(record["member_id"], p.member_id);
    assert_eq!(record["is_public"], true);
    assert_eq!(record["active"], true);
    assert_eq!(record["data_segment_type_id"], "Audience");
    assert_eq!(record["recommend_include"], false, "the default");
    assert_eq!(created["response"]["count"], 1);

    // Update it: the seed's PUT body has no segment_id; the record keeps its segment.
    let update = json!({"segment-billing-category": {
        "id": id, "active": false, "is_public": true, "data_provider_id": p.member_id,
        "data_category_id": p.fix_category, "data_segment_type_id": "Contextual"}});
    let updated: Value = with_cookie(
        reqwest::Method::PUT,
        &format!("/segment-billing-category?member_id={}", p.member_id),
    )
    .body(update.to_string())
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let record = &updated["response"]["segment_billing_categories"][0];
    assert_eq!(record["active"], false);
    assert_eq!(record["data_segment_type_id"], "Contextual");
    assert_eq!(record["segment_id"], p.seg("s1"));

    // View all, then paging with start_element / num_elements.
    map(&server, &p, "s2", p.rate_category).await;
    map(&server, &p, "s3", p.rub_category).await;
    let all: Value = with_cookie(reqwest::Method::GET, "/segment-billing-category")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["response"]["count"], 3);
    assert_eq!(all["response"]["num_elements"], 25);
    assert_eq!(all["response"]["start_element"], 0);
    let page: Value = with_cookie(
        reqwest::Method::GET,
        "/segment-billing-category?start_element=1&num_elements=1",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(page["response"]["count"], 3);
    assert_eq!(page["response"]["start_element"], 1);
    let items = page["response"]["segment_billing_categories"]
        .as_array()
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["segment_id"], p.seg("s2"));

    // Remove it.
    let removed: Value = with_cookie(
        reqwest::Method::DELETE,
        &format!(
            "/segment-billing-category?member_id={}&id={id}",
            p.member_id
        ),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(removed["response"]["status"], "OK");
    assert_eq!(removed["response"]["count"], 0);
    assert_eq!(removed["response"]["num_elements"], 0);
    assert!(removed["response"]["segment_billing_category"].is_null());
    let (_, after) = server.get("/segment-billing-category", &p.session).await;
    assert_eq!(after["response"]["count"], 2);
}

#[tokio::test]
async fn ownership_roles_and_bad_input_are_refused_clearly() {
    let server = TestServer::start().await;
    let a = provider(&server, "alpha", &["a1"]).await;
    let b = provider(&server, "beta", &["b1"]).await;
    let a_mapping = map(&server, &a, "a1", a.fix_category).await;
    let path = "/segment-billing-category";
    let post = |body: Value| server.post(path, &b.session, body);

    // Another provider's segment, another provider's category, another data provider id.
    let (status, body) = post(mapping(&b, a.seg("a1"), b.fix_category)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["response"]["status"], "error");
    assert_eq!(body["response"]["field"], "segment_id");
    assert!(
        body["response"]["error"]
            .as_str()
            .unwrap()
            .contains("not one of your segments")
    );
    let (status, body) = post(mapping(&b, b.seg("b1"), a.fix_category)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["response"]["field"], "data_category_id");
    let mut foreign_dp = mapping(&b, b.seg("b1"), b.fix_category);
    foreign_dp["segment-billing-category"]["data_provider_id"] = json!(a.member_id);
    let (status, body) = post(foreign_dp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["response"]["field"], "data_provider_id");
    // Another member id in the query.
    let (status, body) = server
        .get(&format!("{path}?member_id={}", a.member_id), &b.session)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["response"]["error_id"], "UNAUTH");
    // Another provider's record id: not found among yours, on GET, PUT and DELETE.
    let (status, _) = server
        .get(&format!("{path}?id={a_mapping}"), &b.session)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .put(
            path,
            &b.session,
            json!({"segment-billing-category": {"id": a_mapping, "active": false}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .delete(&format!("{path}?id={a_mapping}"), &b.session)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, still) = server
        .get(&format!("{path}?id={a_mapping}"), &a.session)
        .await;
    assert_eq!(
        still["response"]["segment_billing_categories"][0]["active"],
        true
    );

    // Bad input names the field.
    let mut bad_type = mapping(&b, b.seg("b1"), b.fix_category);
    bad_type["segment-billing-category"]["data_segment_type_id"] = json!("Sports");
    let (status, body) = post(bad_type).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["response"]["field"], "data_segment_type_id");
    let mut missing = mapping(&b, b.seg("b1"), b.fix_category);
    missing["segment-billing-category"]
        .as_object_mut()
        .unwrap()
        .remove("active");
    let (status, body) = post(missing).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["response"]["field"], "active");
    let (status, body) = server
        .get(&format!("{path}?num_elements=101"), &b.session)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["response"]["field"], "num_elements");
    // Brand Safety recommended for inclusion: kept, with a warning.
    let mut brand = mapping(&b, b.seg("b1"), b.fix_category);
    brand["segment-billing-category"]["data_segment_type_id"] = json!("Brand Safety");
    brand["segment-billing-category"]["recommend_include"] = json!(true);
    let (status, body) = post(brand.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let warnings = body["response"]["dbg_info"]["warnings"].as_array().unwrap();
    assert!(warnings[0].as_str().unwrap().contains("exclusion"));
    // One mapping per segment.
    let (status, body) = post(brand).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Sign-in and roles.
    let (status, body, cookie) = server.sign_in("alpha-user", "wrong password!").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["response"]["error_id"], "NOAUTH");
    assert!(cookie.is_none());
    let (status, _, _) = server.sign_in("nobody", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server.get(path, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server.get(path, "forged-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server.get(path, &a.tenant.token).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an OAuth token is not a session"
    );
    let catalog = server.state.catalog.as_ref();
    let buyer = catalog
        .create_buyer("Shop", BuyerKind::Advertiser, server.state.clock.now())
        .await
        .unwrap();
    ops::create_user(
        catalog,
        server.state.clock.as_ref(),
        "shop-user",
        PASSWORD,
        UserRole::Buyer(buyer.id),
    )
    .await
    .unwrap();
    let (_, body, _) = server.sign_in("shop-user", PASSWORD).await;
    let buyer_session = body["response"]["token"].as_str().unwrap().to_owned();
    let (status, body) = server.get(path, &buyer_session).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["response"]["error_code"], "wrong_role");
    // Sessions expire, and end when the password changes.
    ops::set_password(catalog, "alpha-user", "a brand new password")
        .await
        .unwrap();
    let (status, _) = server.get(path, &a.session).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.clock.advance_secs(7200);
    let (status, body) = server.get(path, &b.session).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["response"]["error_code"], "expired_token");
}

struct Market {
    server: TestServer,
    a: Provider,
    b: Provider,
    bidder: String,
    buyer: i64,
    other_buyer: i64,
    buyer_session: String,
}

fn rfc3339(at: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp(at.secs())
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn market_in(server: TestServer) -> Market {
    let a = provider(&server, "alpha", &["fix", "rate", "rub", "free"]).await;
    let b = provider(&server, "beta", &["bfix"]).await;
    map(&server, &a, "fix", a.fix_category).await;
    map(&server, &a, "rate", a.rate_category).await;
    map(&server, &a, "rub", a.rub_category).await;
    map(&server, &b, "bfix", b.fix_category).await;
    let catalog = server.state.catalog.as_ref();
    let clock = server.state.clock.as_ref();
    catalog
        .set_rate(CurrencyCode::RUB, 0.01, clock.now())
        .await
        .unwrap();
    let buyer = catalog
        .create_buyer("Shop", BuyerKind::Advertiser, clock.now())
        .await
        .unwrap();
    let other = catalog
        .create_buyer("Other", BuyerKind::Advertiser, clock.now())
        .await
        .unwrap();
    ops::create_user(
        catalog,
        clock,
        "shop-user",
        PASSWORD,
        UserRole::Buyer(buyer.id),
    )
    .await
    .unwrap();
    let bidder = ops::create_bidder(catalog, clock, "bidder").await.unwrap();
    server.state.billing.reload(catalog).await.unwrap();
    let (_, body, _) = server.sign_in("shop-user", PASSWORD).await;
    let buyer_session = body["response"]["token"].as_str().unwrap().to_owned();
    // The unmapped segment reaches the buyer through a free public share it activated.
    let (status, share) = server
        .post("/shares", &a.session, json!({"segments": [a.seg("free")]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{share}");
    let (status, body) = server
        .post(
            "/buyer/activations",
            &buyer_session,
            json!({"key": share["key"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Market {
        a,
        b,
        bidder: bidder.token,
        buyer: buyer.id,
        other_buyer: other.id,
        buyer_session,
        server,
    }
}

impl Market {
    fn event(
        &self,
        id: &str,
        buyer: i64,
        segments: &[u32],
        excluded: &[u32],
        media: f64,
        cur: &str,
    ) -> Value {
        json!({"impressionId": id, "time": rfc3339(self.server.state.clock.now()),
               "buyerId": buyer, "campaignId": 77, "region": "eu", "mediaCost": media,
               "mediaCurrency": cur, "segments": segments, "excludedSegments": excluded})
    }

    async fn report(&self, events: Vec<Value>) -> Value {
        let (status, body) = self
            .server
            .post("/bidder/usage", &self.bidder, json!({"events": events}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

#[tokio::test]
async fn impressions_are_priced_by_the_rules_and_counted_once() {
    let m = market_in(TestServer::start().await).await;
    let (a, b) = (&m.a, &m.b);
    let answer = m
        .report(vec![
            // FIX 2 USD CPM → 0.002.
            m.event("i1", m.buyer, &[a.seg("fix")], &[], 0.01, "USD"),
            // RATE 10 % of 0.05 → 0.005.
            m.event("i2", m.buyer, &[a.seg("rate")], &[], 0.05, "USD"),
            // FIX 90 RUB CPM at 0.01 USD/RUB → 0.0009.
            m.event("i3", m.buyer, &[a.seg("rub")], &[], 0.05, "USD"),
            // Unmapped: usable, not charged.
            m.event("i4", m.buyer, &[a.seg("free")], &[], 0.05, "USD"),
            // Two segments of one provider: the dearer one (rate: 10 % of 0.05 = 0.005) only;
            // another provider's segment is charged too (0.002); exclusions never.
            m.event(
                "i5",
                m.buyer,
                &[a.seg("fix"), a.seg("rate"), b.seg("bfix")],
                &[a.seg("rub")],
                0.05,
                "USD",
            ),
            // Media cost in RUB: 10 % of 5 RUB = 0.5 RUB = 0.005 USD.
            m.event("i6", m.other_buyer, &[a.seg("rate")], &[], 5.0, "RUB"),
            // Refused one by one, with reasons.
            m.event("bad-buyer", 999_999, &[a.seg("fix")], &[], 0.01, "USD"),
            m.event("bad-segment", m.buyer, &[4_000_000], &[], 0.01, "USD"),
            m.event("bad-currency", m.buyer, &[a.seg("rate")], &[], 0.01, "EUR"),
            m.event("", m.buyer, &[a.seg("fix")], &[], 0.01, "USD"),
        ])
        .await;
    assert_eq!(answer["received"], 10);
    assert_eq!(answer["recorded"], 6);
    assert_eq!(answer["rejected"], 4);
    assert_eq!(answer["currency"], "USD");
    let cost = |i: usize| answer["events"][i]["dataCost"].as_f64().unwrap();
    let close = |x: f64, y: f64| (x - y).abs() < 1e-9;
    assert!(close(cost(0), 0.002), "{answer}");
    assert!(close(cost(1), 0.005));
    assert!(close(cost(2), 0.0009));
    assert!(close(cost(3), 0.0));
    assert!(close(cost(4), 0.007), "{}", cost(4));
    assert!(close(cost(5), 0.005));
    let reason = |i: usize| answer["events"][i]["reason"].as_str().unwrap().to_owned();
    assert!(reason(6).contains("buyer 999999 does not exist"));
    assert!(reason(7).contains("segment 4000000 does not exist"));
    assert!(reason(8).contains("EUR"));
    assert!(reason(9).contains("impressionId"));

    // Resending counts nothing twice.
    let again = m
        .report(vec![
            m.event("i1", m.buyer, &[a.seg("fix")], &[], 0.01, "USD"),
            m.event("i7", m.buyer, &[a.seg("fix")], &[], 0.01, "USD"),
            m.event("i7", m.buyer, &[a.seg("fix")], &[], 0.01, "USD"),
        ])
        .await;
    assert_eq!(again["recorded"], 1);
    assert_eq!(again["duplicates"], 2);
    assert_eq!(again["events"][0]["status"], "duplicate");

    // The auditor's view of one impression: every charge with the price in force.
    let (status, record) = m
        .server
        .get("/usage/impressions/i5", segmart_server_operator())
        .await;
    assert_eq!(status, StatusCode::OK, "{record}");
    let statuses: Vec<&str> = record["charges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["superseded", "charged", "charged", "excluded"]);
    assert_eq!(record["charges"][0]["price"]["costType"], "FIX");
    assert_eq!(record["charges"][0]["price"]["costValue"], 2.0);
    // A provider sees only its own charges of it; a buyer its own impressions, without payouts.
    let (_, seen_by_b) = m.server.get("/usage/impressions/i5", &b.session).await;
    assert_eq!(seen_by_b["charges"].as_array().unwrap().len(), 1);
    let (status, _) = m
        .server
        .get("/usage/impressions/i6", &m.buyer_session)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another buyer's impression");
    let (_, own) = m
        .server
        .get("/usage/impressions/i1", &m.buyer_session)
        .await;
    assert!(own["charges"][0].get("payout").is_none());
    assert!(own["charges"][0]["dataCost"].as_f64().is_some());

    // Reports: the provider sees its own data with payout and fee (20 % revshare).
    let (status, report) = m.server.get("/usage", &a.session).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let totals = &report["totals"];
    // alpha: i1 .002 + i2 .005 + i3 .0009 + i5 .005 + i6 .005 + i7 .002 = .0199
    assert!(
        close(totals["dataCost"].as_f64().unwrap(), 0.0199),
        "{report}"
    );
    assert!(close(totals["platformFee"].as_f64().unwrap(), 0.00398));
    assert!(close(totals["payout"].as_f64().unwrap(), 0.01592));
    assert_eq!(totals["impressions"], 6);
    assert!(
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["dataProviderId"] == a.member_id)
    );
    // The buyer sees its own spend only, without the provider side.
    let (_, spend) = m.server.get("/usage", &m.buyer_session).await;
    assert!(
        spend["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["buyerId"] == m.buyer)
    );
    assert!(spend["totals"].get("payout").is_none());
    // alpha .002+.005+.0009+.005+.002 (i7) + beta .002 = .0169 ; i6 was the other buyer's.
    assert!(
        close(spend["totals"]["dataCost"].as_f64().unwrap(), 0.0169),
        "{spend}"
    );
    let (status, _) = m
        .server
        .get(
            &format!("/usage?buyer_id={}", m.other_buyer),
            &m.buyer_session,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The operator sees everything; CSV has one line per row.
    let (_, all) = m.server.get("/usage", segmart_server_operator()).await;
    assert_eq!(all["totals"]["impressions"], 7);
    let csv = m
        .server
        .http
        .get(m.server.url("/usage?format=csv"))
        .bearer_auth(&a.session)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "day,data_provider_id,data_category_id,segment_id,segment_key,buyer_id,impressions,data_cost,payout,platform_fee,currency"
    );
    assert_eq!(lines.count(), report["rows"].as_array().unwrap().len());
    assert!(text.contains(",fix,"));
    let (status, body) = m.server.get("/usage?from=2026-13-01", &a.session).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "from");
}

fn segmart_server_operator() -> &'static str {
    common::OPERATOR_TOKEN
}

#[tokio::test]
async fn an_impression_is_priced_with_the_rules_in_force_at_its_time() {
    let m = market_in(TestServer::start().await).await;
    let a = &m.a;
    let before = m.server.state.clock.now();
    m.server.clock.advance_secs(3600);
    // The category doubles its price; the segment's mapping is removed an hour later.
    let catalog = m.server.state.catalog.as_ref();
    catalog
        .set_category_price(
            a.fix_category,
            Price {
                cost_type: CostType::Fix,
                value: 4.0,
                currency: CurrencyCode::USD,
            },
            m.server.state.clock.now(),
        )
        .await
        .unwrap();
    m.server.state.billing.reload(catalog).await.unwrap();
    let mut old = m.event("old", m.buyer, &[a.seg("fix")], &[], 0.01, "USD");
    old["time"] = json!(rfc3339(before));
    let new = m.event("new", m.buyer, &[a.seg("fix")], &[], 0.01, "USD");
    let answer = m.report(vec![old, new]).await;
    assert_eq!(answer["events"][0]["dataCost"], 0.002);
    assert_eq!(answer["events"][1]["dataCost"], 0.004);
    m.server.clock.advance_secs(1800);
    // A free share keeps the segment usable once it is no longer public through its mapping.
    let (_, share) = m
        .server
        .post("/shares", &a.session, json!({"segments": [a.seg("fix")]}))
        .await;
    let (status, _) = m
        .server
        .post(
            "/buyer/activations",
            &m.buyer_session,
            json!({"key": share["key"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = m.server.get("/segment-billing-category", &a.session).await;
    let id = list["response"]["segment_billing_categories"][0]["id"]
        .as_i64()
        .unwrap();
    let (status, _) = m
        .server
        .delete(&format!("/segment-billing-category?id={id}"), &a.session)
        .await;
    assert_eq!(status, StatusCode::OK);
    let late = m.event("late", m.buyer, &[a.seg("fix")], &[], 0.01, "USD");
    let mut earlier = m.event("earlier", m.buyer, &[a.seg("fix")], &[], 0.01, "USD");
    earlier["time"] = json!(rfc3339(before.plus_secs(3600 + 60)));
    let answer = m.report(vec![late, earlier]).await;
    assert_eq!(
        answer["events"][0]["dataCost"], 0.0,
        "unmapped now: not charged"
    );
    assert_eq!(answer["events"][1]["dataCost"], 0.004, "mapped then");
    // Events from the future are refused.
    let mut future = m.event("future", m.buyer, &[a.seg("fix")], &[], 0.01, "USD");
    future["time"] = json!(rfc3339(m.server.state.clock.now().plus_secs(3600)));
    let answer = m.report(vec![future]).await;
    assert_eq!(answer["events"][0]["status"], "rejected");
}

#[tokio::test]
async fn metering_needs_a_live_bidder_token_and_bounded_batches() {
    let m = market_in(TestServer::start().await).await;
    let body = json!({"events": [m.event("x", m.buyer, &[m.a.seg("fix")], &[], 0.01, "USD")]});
    let (status, _) = m.server.post("/bidder/usage", "", body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = m
        .server
        .post("/bidder/usage", &m.a.tenant.token, body.clone())
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a provider token is not a bidder token"
    );
    let (status, _) = m
        .server
        .post("/bidder/usage", &m.a.session, body.clone())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = m
        .server
        .post(
            "/bidder/usage",
            &m.bidder,
            json!({"events": [{"impressionId": "x"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["field"]
            .as_str()
            .unwrap_or_default()
            .contains("events[0]"),
        "{body}"
    );
    let many: Vec<Value> = (0..10_001)
        .map(|i| {
            m.event(
                &format!("e{i}"),
                m.buyer,
                &[m.a.seg("fix")],
                &[],
                0.01,
                "USD",
            )
        })
        .collect();
    let (status, _) = m
        .server
        .post("/bidder/usage", &m.bidder, json!({"events": many}))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // A revoked bidder is refused at once.
    let catalog = m.server.state.catalog.as_ref();
    let bidders = catalog.list_bidders().await.unwrap();
    catalog.revoke_bidder(bidders[0].id).await.unwrap();
    m.server.state.billing.reload(catalog).await.unwrap();
    let body = json!({"events": [m.event("y", m.buyer, &[m.a.seg("fix")], &[], 0.01, "USD")]});
    let (status, _) = m.server.post("/bidder/usage", &m.bidder, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_ledger_and_its_dedup_survive_a_restart() {
    let m = market_in(TestServer::start().await).await;
    let events: Vec<Value> = (0..50)
        .map(|i| {
            m.event(
                &format!("r{i}"),
                m.buyer,
                &[m.a.seg("fix")],
                &[],
                0.01,
                "USD",
            )
        })
        .collect();
    let answer = m.report(events.clone()).await;
    assert_eq!(answer["recorded"], 50);
    let (_, before) = m.server.get("/usage", segmart_server_operator()).await;
    let Market {
        server, bidder, a, ..
    } = m;
    let (dir, clock) = server.stop().await;
    let server = TestServer::start_in(dir, Options::default(), Some(clock)).await;
    let (_, after) = server.get("/usage", segmart_server_operator()).await;
    assert_eq!(after, before);
    let (status, again) = server
        .post("/bidder/usage", &bidder, json!({"events": events}))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["duplicates"], 50);
    let (status, record) = server.get("/usage/impressions/r7", &a.session).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["charges"][0]["dataCost"], 0.002);
}

#[tokio::test]
async fn the_operator_sets_up_billing_over_the_admin_api() {
    let server = TestServer::start().await;
    let t = server.tenant(IdType::Cookie).await;
    let (_, seg) = server
        .post(
            &t.segments_path(),
            &t.token,
            json!({"segmentId": "s", "name": "S"}),
        )
        .await;
    let member = server
        .state
        .catalog
        .member_of_provider(t.provider.id)
        .await
        .unwrap()
        .unwrap()
        .member_id;
    let op = segmart_server_operator();
    let (status, _) = server
        .post(
            "/admin/billing/revshare",
            op,
            json!({"memberId": member, "pct": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, publisher) = server
        .post(
            "/admin/billing/publishers",
            op,
            json!({"memberId": member, "name": "P"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{publisher}");
    let (status, body) = server
        .post(
            "/admin/billing/categories",
            op,
            json!({"publisherId": publisher["id"], "name": "C", "costType": "RATE", "costValue": 101}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "cost_value");
    let (status, category) = server
        .post(
            "/admin/billing/categories",
            op,
            json!({"publisherId": publisher["id"], "name": "C", "costType": "FIX", "costValue": 3, "currency": "RUB"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{category}");
    let (status, _) = server
        .post(
            "/admin/billing/rates",
            op,
            json!({"currency": "RUB", "rate": 0.5}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, buyer) = server
        .post("/admin/buyers", op, json!({"name": "Shop"}))
        .await;
    assert_eq!(buyer["kind"], "advertiser");
    let (status, user) = server
        .post(
            "/admin/users",
            op,
            json!({"username": "prov", "memberId": member}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let (status, bidder) = server
        .post("/admin/bidders", op, json!({"name": "rtb"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Nobody else may.
    for path in ["/admin/buyers", "/admin/bidders", "/admin/billing/rates"] {
        let (status, _) = server.post(path, &t.token, json!({"name": "x"})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // What the operator set up prices an impression: 3 RUB CPM at 0.5 = 0.0015 USD.
    let (_, session, _) = server
        .sign_in("prov", user["password"].as_str().unwrap())
        .await;
    let session = session["response"]["token"].as_str().unwrap().to_owned();
    let (status, _) = server
        .post(
            "/segment-billing-category",
            &session,
            json!({"segment-billing-category": {"active": true, "data_provider_id": member,
                   "data_category_id": category["id"], "segment_id": seg["id"], "is_public": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let now = rfc3339(server.state.clock.now());
    let (_, answer) = server
        .post(
            "/bidder/usage",
            bidder["token"].as_str().unwrap(),
            json!({"events": [{"impressionId": "x", "time": now, "buyerId": buyer["id"],
                   "campaignId": 1, "mediaCost": 1, "mediaCurrency": "USD", "segments": [seg["id"]]}]}),
        )
        .await;
    assert_eq!(answer["events"][0]["dataCost"], 0.0015, "{answer}");
}
