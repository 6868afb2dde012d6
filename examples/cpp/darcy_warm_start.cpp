// Warm-starting a Darcy solver with the surrogate, in C++ through piddm.hpp.
//
//   darcy_warm_start_cpp MODEL.onnx PROBLEMS.f32 OUT_DIR [COUNT] [STEPS] [LAMBDA_INFER]
//
// For each problem of the problems file (fresh coefficients the model never saw): the surrogate's u
// given all of a (piddm solve, all problems in one batch), then Jacobi-PCG from zero and from that
// u. Prints median iterations and seconds (inference included) at relative residuals 1e-4, 1e-6,
// 1e-8; writes OUT_DIR/warm_start_cpp.txt.
#include "surrogate.hpp"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

int main(int argc, char **argv) try {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s MODEL.onnx PROBLEMS.f32 OUT_DIR [COUNT] [STEPS] [LAMBDA_INFER]\n", argv[0]);
        return 2;
    }
    const std::string out_dir = argv[3];
    const darcy::fields problems = darcy::read_fields(argv[2]);
    const std::size_t count = argc > 4 ? std::min<std::size_t>(std::stoul(argv[4]), problems.count) : problems.count;
    piddm::model model(argv[1]);
    surrogate::check_grid(model, problems);
    const piddm_solve_params params = surrogate::forward_params(model, argc, argv, 5);
    const darcy::grid g{problems.nx};
    const std::size_t plane = problems.plane(), field = 2 * plane;

    // the forward problem for the surrogate: all of a observed
    const surrogate::forward_answers fwd = surrogate::forward(model, problems, count, params);
    const piddm::solve_result &answer = fwd.result;
    const double t_inf = fwd.seconds_per_problem;

    // this operator against the model's residual on the surrogate's answers
    std::vector<float> res_map;
    model.residual(answer.fields, count, res_map);
    double diff = 0, scale = 0;
    const std::vector<double> tols = {1e-4, 1e-6, 1e-8};
    std::vector<std::vector<double>> iz(3), is(3), sz(3), ss(3);
    std::vector<double> err_sur, err_pcg, r0_sur;
    for (std::size_t p = 0; p < count; ++p) {
        const darcy::field a = darcy::to_field(problems.at(p, 0), plane);
        const darcy::field uref = darcy::to_field(problems.at(p, 1), plane);
        const darcy::field b = darcy::rhs(g, problems.at(p, 2));
        const darcy::field usur = darcy::to_field(answer.fields.data() + p * field + plane, plane);
        darcy::field y(plane);
        darcy::apply(g, a, usur, y);
        g.interior([&](std::size_t k) {
            diff = std::max(diff, std::abs(y[k] - b[k] - res_map[p * plane + k]));
            scale = std::max(scale, std::abs(double(res_map[p * plane + k])));
        });
        darcy::field x(plane, 0.0);
        const darcy::pcg_result zero = darcy::pcg(g, a, b, x, tols);
        err_pcg.push_back(darcy::rel_l2(x, uref));
        x = usur;
        const darcy::pcg_result warm = darcy::pcg(g, a, b, x, tols);
        err_sur.push_back(darcy::rel_l2(usur, uref));
        r0_sur.push_back(warm.initial);
        for (int t = 0; t < 3; ++t) {
            if (zero.iters[t] < 0 || warm.iters[t] < 0) throw std::runtime_error("PCG did not converge");
            iz[t].push_back(zero.iters[t]), is[t].push_back(warm.iters[t]);
            sz[t].push_back(zero.seconds[t]), ss[t].push_back(warm.seconds[t] + t_inf);
        }
    }
    std::printf("warm start (C++): %zu problems, %lld surrogate steps, lambda_infer %g\n", count, (long long)params.steps,
                params.lambda_infer);
    std::printf("  this operator against the model's residual: max difference %.2e (largest residual %.2e)\n", diff,
                scale);
    const double worst_pcg = *std::max_element(err_pcg.begin(), err_pcg.end());
    std::printf("  PCG at 1e-8 against the problems' solver u: largest relative L2 %.2e\n", worst_pcg);
    if (diff > 1e-3 * std::max(1.0, scale)) throw std::runtime_error("this solver's operator differs from the model's");
    if (worst_pcg > 1e-4) throw std::runtime_error("PCG disagrees with the problems' reference solutions");
    std::printf("  surrogate u: median relative L2 %.2f %%, initial relative residual %.3f, %.4f s per problem\n",
                100 * darcy::median(err_sur), darcy::median(r0_sur), t_inf);
    std::printf("  tolerance | CG iterations zero -> surrogate (saving) | seconds zero -> surrogate incl. inference\n");
    const char *names[3] = {"1e-4", "1e-6", "1e-8"};
    std::ofstream kv(out_dir + "/warm_start_cpp.txt");
    kv << "problems = " << count << "\nranks = 1\nsurrogate_steps = " << params.steps
       << "\ninference_seconds_per_problem = " << t_inf << "\nsurrogate_rel_l2_u = " << darcy::median(err_sur)
       << "\nsurrogate_initial_rel_residual = " << darcy::median(r0_sur)
       << "\nstencil_max_difference = " << diff << "\n";
    for (int t = 0; t < 3; ++t) {
        const double mz = darcy::median(iz[t]), ms = darcy::median(is[t]);
        std::printf("  %s      | %7.1f -> %7.1f (%5.1f %%) | %.2e -> %.2e\n", names[t], mz, ms, 100 * (1 - ms / mz),
                    darcy::median(sz[t]), darcy::median(ss[t]));
        kv << "iters_zero_" << names[t] << " = " << mz << "\niters_surrogate_" << names[t] << " = " << ms
           << "\nseconds_zero_" << names[t] << " = " << darcy::median(sz[t]) << "\nseconds_surrogate_" << names[t]
           << " = " << darcy::median(ss[t]) << "\n";
    }
    if (!kv) throw std::runtime_error("cannot write " + out_dir + "/warm_start_cpp.txt");
    return 0;
} catch (const std::exception &e) {
    std::fprintf(stderr, "darcy_warm_start_cpp: %s\n", e.what());
    return 1;
}
