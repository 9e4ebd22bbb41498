// The bound's scratch database runs the runtime's migrations, embedded at compile time by
// `sqlx::migrate!`: a new or changed file must rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=../runtime/migrations");
}
