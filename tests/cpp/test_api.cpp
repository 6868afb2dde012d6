// The C++ wrapper end to end: RAII, exceptions with the library's message, threads on one model.
// usage: test_api MODEL.onnx
#include "piddm.hpp"
#include "piddm.h" // twice in one unit, from C++

#include <cmath>
#include <cstdio>
#include <thread>

static int passed = 0, failed = 0;
#define CHECK(cond)                                                         \
    do {                                                                    \
        if (cond) passed++;                                                 \
        else { failed++; std::fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #cond); } \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    piddm::model m(argv[1], piddm::options().threads(1));
    auto s = m.shape();
    CHECK(s.channels == 2 && s.ny == s.nx);
    auto x = m.generate(7, 2);
    CHECK(x.size() == 2 * s.field());
    CHECK(m.generate(7, 2) == x);
    std::vector<float> map;
    double ms = m.residual(x, 2, map);
    CHECK(ms > 0 && std::isfinite(ms) && map.size() == 2 * s.ny * s.nx);

    // inverse problem: all of u observed
    std::vector<std::uint8_t> mask(x.size(), 0);
    for (std::size_t b = 0; b < 2; b++)
        for (std::size_t i = 0; i < s.ny * s.nx; i++) mask[b * s.field() + s.ny * s.nx + i] = 1;
    auto p = m.default_solve_params();
    p.steps = 5;
    auto r = m.solve(x, mask, 2, p);
    CHECK(r.report.steps == 5 && r.loss_history.size() == 6 && r.report.final_loss <= r.report.initial_loss);

    // the one-call answer: no loss, no history, observations kept
    CHECK(m.has_amortised());
    p.steps = 0;
    p.start = PIDDM_START_AMORTISED;
    auto one = m.solve(x, mask, 2, p);
    CHECK(one.report.steps == 0 && one.loss_history.empty() && std::isnan(one.report.initial_loss));
    CHECK(one.report.misfit == 0.0 && one.fields[s.ny * s.nx] == x[s.ny * s.nx]);

    // the spread of answers: the mean of K answers keeps the observations, their std is zero there
    auto sp = m.solve_spread(x, mask, 2, 4, p);
    CHECK(sp.mean.size() == x.size() && sp.std.size() == x.size() && sp.std_scale.size() == 2);
    CHECK(sp.mean[s.ny * s.nx] == x[s.ny * s.nx] && sp.std[s.ny * s.nx] == 0.0f && sp.std_scale[0] == 1.0);
    double total = 0;
    for (std::size_t i = 0; i < s.ny * s.nx; i++) total += sp.std[i];
    CHECK(total > 0); // a, unobserved, varies over the answers
    try {
        m.solve_spread(x, mask, 2, 1, p);
        CHECK(false);
    } catch (const piddm::error &e) {
        CHECK(e.status() == PIDDM_ERR_INVALID_ARGUMENT);
    }

    // errors are exceptions with the status and the message
    try {
        m.generate(1, 1, x.data(), 3);
        CHECK(false);
    } catch (const piddm::error &e) {
        CHECK(e.status() == PIDDM_ERR_SIZE);
        CHECK(std::string(e.what()).find("needs") != std::string::npos);
    }
    try {
        piddm::model bad("/nonexistent.onnx");
        CHECK(false);
    } catch (const piddm::error &e) {
        CHECK(e.status() == PIDDM_ERR_IO);
    }

    // one model, 8 threads, the same bits as serial calls
    std::vector<std::vector<float>> serial, par(8);
    for (int t = 0; t < 8; t++) serial.push_back(m.generate(100 + t, 1));
    std::vector<std::thread> th;
    for (int t = 0; t < 8; t++) th.emplace_back([&, t] { par[t] = m.generate(100 + t, 1); });
    for (auto &t : th) t.join();
    CHECK(serial == par);

    // copies share the loaded model; each releases its own handle
    {
        piddm::model copy = m;
        CHECK(copy.get() != m.get() && copy.generate(7, 2) == x);
        piddm::model other(argv[1]);
        other = copy;
        CHECK(other.generate(7, 2) == x);
    }
    CHECK(m.generate(7, 2) == x);
    // a batch past the limits is refused before anything is allocated
    try {
        m.generate(1, std::size_t(1) << 40);
        CHECK(false);
    } catch (const piddm::error &e) {
        CHECK(e.status() == PIDDM_ERR_SIZE);
    }
    p.steps = -1;
    try {
        m.solve(x, mask, 2, p);
        CHECK(false);
    } catch (const piddm::error &e) {
        CHECK(e.status() == PIDDM_ERR_INVALID_ARGUMENT);
    }

    piddm::model moved = std::move(m);
    CHECK(moved.shape().nx == s.nx);
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
