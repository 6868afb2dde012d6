// What the C++ examples ask of the surrogate (through piddm.hpp), written once.
#pragma once

#include "darcy.hpp"

#include <piddm.hpp>

#include <chrono>

namespace surrogate {

// The model must be a two-channel (a, u) model on the problems' grid.
inline void check_grid(const piddm::model &model, const darcy::fields &problems) {
    const piddm::shape_t s = model.shape();
    if (s.channels != 2 || s.nx != problems.nx || s.ny != problems.ny)
        throw std::runtime_error("the model's grid differs from the problems'");
}

// The warm starts' solve parameters: the card's, with optional [STEPS] (0: the card's) and
// [LAMBDA_INFER] at argv[first] and argv[first + 1]; seed 1.
inline piddm_solve_params forward_params(const piddm::model &model, int argc, char **argv, int first) {
    piddm_solve_params params = model.default_solve_params();
    if (argc > first && std::stoul(argv[first]) > 0) params.steps = std::int64_t(std::stoul(argv[first]));
    if (argc > first + 1) params.lambda_infer = std::stod(argv[first + 1]);
    params.seed = 1;
    return params;
}

struct forward_answers {
    piddm::solve_result result;  // [count][a, u][ny][nx]
    double seconds_per_problem;
};

// u given all of a, for the first `count` problems, in one batch.
inline forward_answers forward(const piddm::model &model, const darcy::fields &problems, std::size_t count,
                               const piddm_solve_params &params) {
    const std::size_t plane = problems.plane(), field = 2 * plane;
    std::vector<float> observed(count * field, 0.0f);
    std::vector<std::uint8_t> mask(count * field, 0);
    for (std::size_t p = 0; p < count; ++p) {
        std::copy_n(problems.at(p, 0), plane, observed.begin() + p * field);
        std::fill_n(mask.begin() + p * field, plane, 1);
    }
    const auto t0 = std::chrono::steady_clock::now();
    piddm::solve_result r = model.solve(observed, mask, count, params);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return {std::move(r), secs / double(count)};
}

}  // namespace surrogate
