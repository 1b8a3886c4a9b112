// swift-tools-version:5.9
// Missive for Swift: the uniffi-generated bindings (Sources/Missive/Generated and the C header in
// Sources/MissiveFFI, both written by `cargo xtask swift`), an idiomatic async layer, and XCTest
// tests against a real reference server. MISSIVE_LIB_DIR names the directory holding
// libmissive_ffi.so (default: the workspace's target/debug). On Apple platforms use the
// XCFramework route described in the README instead of these linker flags.
import PackageDescription

let libDir = Context.environment["MISSIVE_LIB_DIR"] ?? Context.packageDirectory + "/../../target/debug"

let package = Package(
    name: "Missive",
    products: [.library(name: "Missive", targets: ["Missive"])],
    targets: [
        .systemLibrary(name: "MissiveFFI", path: "Sources/MissiveFFI"),
        .target(
            name: "Missive",
            dependencies: ["MissiveFFI"],
            path: "Sources/Missive",
            linkerSettings: [.unsafeFlags(["-L", libDir, "-Xlinker", "-rpath", "-Xlinker", libDir])]
        ),
        .testTarget(name: "MissiveTests", dependencies: ["Missive"], path: "Tests/MissiveTests"),
    ]
)
