//! The echo answers GetTitle exactly as the seed has it, over a real socket.

use fleet_proto::catalog::v1 as pb;
use fleet_proto::catalog::v1::catalog_client::CatalogClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn get_title_answers_the_seed_title_and_not_found_otherwise() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(fleet_bench::serve(listener, shutdown.clone()));

    let mut client = CatalogClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let seed = &fleet_seed::titles(&fleet_seed::SeedConfig::default())[41];
    let title = client
        .get_title(pb::GetTitleRequest {
            id: seed.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .title
        .unwrap();
    assert_eq!(title.id, "t00042");
    assert_eq!(title.name, seed.name);
    assert_eq!(title.synopsis, seed.synopsis);
    assert_eq!(title.genre, seed.genre);

    let missing = client
        .get_title(pb::GetTitleRequest {
            id: "t99999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let other = client
        .list_genres(pb::ListGenresRequest {})
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::Unimplemented);

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
