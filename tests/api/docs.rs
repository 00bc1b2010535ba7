//! `/docs`: a real API reference (Swagger UI 5, which renders OpenAPI 3.1) served from the
//! binary itself, with nothing fetched from elsewhere.

use crate::helpers::*;

#[tokio::test]
async fn docs_page_loads_swagger_ui_and_the_document_from_this_server_only() {
    let app = spawn_app().await;
    let page = app.get("/docs").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for asset in [
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/init.js",
    ] {
        assert!(html.contains(asset), "{asset} referenced");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN or other origin: {html}"
    );

    let init = app.get("/docs/init.js").send().await.unwrap();
    assert_eq!(init.status(), 200);
    let init = init.text().await.unwrap();
    assert!(init.contains("url: \"/openapi.json\""));
    assert!(
        init.contains("persistAuthorization: false"),
        "the API key is never written to browser storage"
    );

    let bundle = app.get("/docs/swagger-ui-bundle.js").send().await.unwrap();
    assert_eq!(bundle.status(), 200);
    assert!(
        bundle.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let bundle = bundle.text().await.unwrap();
    let version = bundle
        .split("PACKAGE_VERSION:\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("Swagger UI's version is in its bundle");
    assert!(
        version.starts_with("5."),
        "Swagger UI 5 renders OpenAPI 3.1; found {version}"
    );
    let css = app.get("/docs/swagger-ui.css").send().await.unwrap();
    assert_eq!(css.status(), 200);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}
