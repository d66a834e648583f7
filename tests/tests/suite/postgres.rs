//! The throwaway PostgreSQL server the PostgreSQL half of the tests runs on:
//! it starts as an unprivileged user, takes only its password, and stops
//! with its test.

use bridge_tests::postgres::PgServer;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn a_test_server_serves_its_own_databases_and_stops_when_dropped() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.create_database("first").await;
    let mut connection = PgConnection::connect(&url).await.expect("connect");
    let (user, database): (String, String) =
        sqlx::query_as("SELECT current_user::text, current_database()::text")
            .fetch_one(&mut connection)
            .await
            .expect("query");
    assert_eq!((user.as_str(), database.as_str()), ("bridge", "first"));
    connection.close().await.expect("close");

    let wrong = url.replace(server.password(), "not-the-password");
    let error = PgConnection::connect(&wrong)
        .await
        .expect_err("a wrong password is refused")
        .to_string();
    assert!(error.contains("password authentication failed"), "{error}");

    let port = server.port();
    drop(server);
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "the server still listens after its drop");
}
