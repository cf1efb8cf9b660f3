//! The dashboard in a real browser: headless Chromium loads the page from the admin
//! listener, the page lists a connected client, and clicking its Kick button
//! disconnects that client (which sees DISCONNECT 0x98). Screenshots of both states
//! are kept under the target directory (`dashboard-screenshots/`).

use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use serde_json::json;

use crate::cdp::{screenshot_dir, Browser};
use crate::common::{connect_v5, within, Broker, TOKEN};

#[tokio::test]
async fn the_dashboard_lists_a_client_and_its_kick_button_disconnects_it() {
    let broker = Broker::start(true).await;
    let (device, _) = connect_v5(broker.mqtt, "sensor-dash-1", true, "sensors/1/#").await;
    let (status, _) = broker
        .api(
            "POST",
            "/api/v1/publish",
            Some(r#"{"topic":"sensors/1/config","payload":"{\"rate\":5}","retain":true}"#),
        )
        .await;
    assert_eq!(status, 200);

    let mut browser = Browser::launch().await;
    for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
        browser.call(domain, json!({})).await;
    }
    // The operator typed the token before: the page finds it in sessionStorage.
    browser
        .call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": format!("sessionStorage.setItem('fleetmq-admin-token', '{TOKEN}');") }),
        )
        .await;
    browser
        .call(
            "Page.navigate",
            json!({ "url": format!("http://{}/", broker.admin) }),
        )
        .await;
    let row = "document.querySelector('tr[data-client=\"sensor-dash-1\"]') !== null";
    browser.wait_for("the client row", row).await;
    browser
        .wait_for(
            "the retained topic",
            "document.getElementById('retained').textContent.includes('sensors/1/config')",
        )
        .await;
    browser
        .wait_for(
            "the health status",
            "document.getElementById('health').textContent === 'healthy'",
        )
        .await;
    let dir = screenshot_dir();
    browser.screenshot(&dir.join("dashboard-clients.png")).await;

    browser
        .click("button.kick[data-client=\"sensor-dash-1\"]")
        .await;
    let reason = within("the kicked client to see DISCONNECT", device.ended)
        .await
        .unwrap();
    assert_eq!(reason, Some(DisconnectReasonCode::AdministrativeAction));
    browser
        .wait_for(
            "the confirmation",
            "document.getElementById('message').textContent === 'disconnected sensor-dash-1'",
        )
        .await;
    browser
        .wait_for(
            "the row to lose its button",
            "document.querySelector('button.kick[data-client=\"sensor-dash-1\"]') === null",
        )
        .await;
    browser
        .screenshot(&dir.join("dashboard-after-kick.png"))
        .await;
    let errors = browser.errors();
    browser.close().await;
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
}

#[tokio::test]
async fn the_dashboard_asks_for_the_token_when_it_has_none() {
    let broker = Broker::start(true).await;
    let mut browser = Browser::launch().await;
    browser.call("Page.enable", json!({})).await;
    browser
        .call(
            "Page.navigate",
            json!({ "url": format!("http://{}/", broker.admin) }),
        )
        .await;
    browser
        .wait_for(
            "the token form",
            "getComputedStyle(document.getElementById('login')).display === 'flex'",
        )
        .await;
    browser
        .eval(&format!("document.getElementById('token').value = '{TOKEN}'; document.querySelector('#login-form button').click(); true"))
        .await;
    browser
        .wait_for(
            "the clients table",
            "document.getElementById('clients-count').textContent === '0 clients'",
        )
        .await;
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('fleetmq-admin-token')")
            .await,
        json!(TOKEN)
    );
    browser
        .screenshot(&screenshot_dir().join("dashboard-token.png"))
        .await;
    browser.close().await;
}
