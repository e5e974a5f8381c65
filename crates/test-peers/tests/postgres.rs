//! Smoke test of the throwaway PostgreSQL cluster: it starts, hands out
//! databases of their own, and takes them back.

use test_peers::postgres;

#[test]
fn each_test_gets_a_database_of_its_own_and_it_is_dropped_after() {
    let cluster = postgres::cluster();
    let a = cluster.database();
    let b = cluster.database();
    assert_ne!(a.name, b.name);
    assert!(a.url.starts_with("postgres://"), "{}", a.url);
    cluster.run("psql", &["-d", &a.name, "-c", "CREATE TABLE t (x int)"]);
    // The table is in a's database only.
    cluster.run("psql", &["-d", &b.name, "-c", "CREATE TABLE t (x int)"]);
    let name = a.name.clone();
    drop(a);
    cluster.run(
        "psql",
        &[
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_database WHERE datname = '{name}') THEN RAISE 'not dropped'; END IF; END $$"),
        ],
    );
}
