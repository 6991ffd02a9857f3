// swift-tools-version: 6.1
import PackageDescription

/// Shared by every Swift target: Swift 6 mode with complete checking plus the
/// upcoming features that keep module surfaces honest.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

/// Numeric targets drop bounds checks in release; their loops work on
/// pointers whose extents are checked once at the kernel's entry.
let numericSettings: [SwiftSetting] = swiftSettings + [
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
]

let package = Package(
    name: "Cohort",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cohort", targets: ["CohortCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // Metrics API (no backend chosen here): the control plane exports its step latency.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        // HMAC-SHA256 for the handshake that proves the instance secret without sending it.
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // Prometheus text for swift-metrics: `--metrics-port` serves it while models run.
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // The engine runs as a Service: graceful shutdown finishes running requests first.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // `cohort serve`: HTTP/1.1 with streamed bodies and graceful shutdown, on SwiftNIO. No traits:
        // the swift-configuration reader and the full-Foundation form coders are not used.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        // One line per request from the server.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // Value types shared by every layer: sampling parameters, ids, finish reasons.
        .target(name: "ExecutorCore", swiftSettings: swiftSettings),
        // Numeric C shim: AVX2 integer dot products (Swift cannot emit vpmaddubsw) and attention loops.
        .target(
            name: "CKernels",
            cSettings: [.unsafeFlags(["-O3", "-fno-math-errno"])]
        ),
        // System C shim: atomics and futexes on raw words.
        .target(name: "CPlatform"),
        // CPU ops over raw buffers: quantization formats, mat-vec / mat-mat, norms, rope, thread pool.
        .target(name: "Kernels", dependencies: ["CKernels", "CPlatform"], swiftSettings: numericSettings),
        // Moving messages between processes: shared-memory rings, authenticated TCP connections.
        .target(
            name: "Transports",
            dependencies: ["ExecutorCore", "CPlatform", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings),
        // GGUF, tokenizer, chat templates, the Llama forward pass, KV cache, sampler.
        .target(name: "ModelRunner", dependencies: ["ExecutorCore", "Kernels"], swiftSettings: numericSettings),
        // allReduce, allGather among ranks: shared memory on a machine, a TCP ring across machines.
        .target(name: "Collectives", dependencies: ["Transports", "ExecutorCore", "CPlatform"], swiftSettings: numericSettings),
        // Start workers and hand back their processes: local processes now, MPI and Ray next.
        .target(name: "Launchers", dependencies: ["ExecutorCore", "CPlatform"], swiftSettings: swiftSettings),
        // A worker process: joins its driver, receives its configuration, heartbeats, runs its
        // rank of the model (rank 0 runs the same `ModelWorker` in the driver).
        .target(
            name: "WorkerRuntime",
            dependencies: ["ExecutorCore", "ModelRunner", "Kernels", "Transports", "Collectives", "CPlatform"],
            swiftSettings: swiftSettings),
        // The driver: the executor, its lifecycle, worker groups, health, the control plane.
        .target(
            name: "Executor",
            dependencies: [
                "ExecutorCore", "ModelRunner", "Transports", "Collectives", "Launchers", "WorkerRuntime", "CPlatform",
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings),
        // Requests into batched steps: schedulers per virtual engine, the engine service.
        .target(
            name: "Engine",
            dependencies: [
                "Executor", "ExecutorCore", "ModelRunner", "Launchers",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings),
        // Serves swift-metrics as Prometheus text at GET /metrics, from a thread of its own.
        .target(
            name: "MetricsExporter",
            dependencies: [
                "Transports",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings),
        // The OpenAI-style request and response bodies, decoded and validated one way for
        // every way in (HTTP bodies and `--prompts-file` lines).
        .target(name: "ServingAPI", dependencies: ["Engine", "Executor", "ExecutorCore", "ModelRunner"], swiftSettings: swiftSettings),
        // `cohort serve`: the OpenAI-compatible HTTP server over the engine.
        .target(
            name: "Server",
            dependencies: [
                "ServingAPI", "Engine", "Executor", "ExecutorCore", "ModelRunner", "MetricsExporter", "Transports", "CPlatform",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings),
        // The `cohort` command tree: parses, validates, calls Engine and Executor.
        .executableTarget(
            name: "CohortCLI",
            dependencies: [
                "Engine", "Executor", "ExecutorCore", "WorkerRuntime", "Launchers", "MetricsExporter", "ServingAPI", "Server",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // Tiny GGUF writer and float tolerance helpers for tests.
        .target(name: "ExecutorTestSupport", dependencies: ["ModelRunner", "Kernels", "Collectives"], swiftSettings: swiftSettings),
        .testTarget(name: "ExecutorCoreTests", dependencies: ["ExecutorCore"], swiftSettings: swiftSettings),
        .testTarget(name: "CollectivesTests", dependencies: ["Collectives", "Transports", "ExecutorTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "TransportsTests", dependencies: ["Transports", "ExecutorCore"], swiftSettings: swiftSettings),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "CKernels", "ModelRunner", "ExecutorTestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "ModelRunnerTests",
            dependencies: ["ModelRunner", "Kernels", "ExecutorCore", "Collectives", "ExecutorTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "CLITests", dependencies: ["ExecutorTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "ServingAPITests", dependencies: ["ServingAPI", "Executor", "ExecutorCore", "ModelRunner"], swiftSettings: swiftSettings),
        .testTarget(
            name: "ExecutorTests",
            dependencies: [
                "Engine", "Executor", "ExecutorCore", "ModelRunner", "Kernels", "ExecutorTestSupport", "WorkerRuntime",
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings),
        // Real worker processes: kill -9, SIGSTOP, driver death, shutdown.
        .testTarget(
            name: "MultiProcessTests",
            dependencies: [
                "Engine", "Executor", "ExecutorCore", "Launchers", "Transports", "Collectives", "ExecutorTestSupport", "ModelRunner", "Kernels", "WorkerRuntime",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings),
        // Runs the real reference model: build and run these in release (`make test`).
        .testTarget(
            name: "ReferenceModelTests",
            dependencies: ["Engine", "Executor", "ExecutorCore", "ModelRunner", "Kernels", "ExecutorTestSupport"],
            swiftSettings: swiftSettings
        ),
    ]
)
