// The surrogate as an inverse initialiser: recover the permeability a from sparse observations of u.
//
//   darcy_inverse MODEL.onnx PROBLEMS.f32 OUT_DIR [COUNT] [FRACTION] [SEEDS] [ITERATIONS] [STEPS]
//   darcy_inverse --check-gradient PROBLEMS.f32      (adjoint gradient against finite differences)
//   darcy_inverse --check-fair-timing                (the timing rule on curves with known answers)
//
// A classical adjoint-gradient inversion: minimise over m = log a
//   J(m) = 1/2 sum_obs (u(a) - d)^2 + beta/2 sum_edges (m_p - m_q)^2,   A(a) u = f,
// with L-BFGS and a backtracking line search; each iteration costs one forward and one adjoint
// solve (PCG). For each of the first COUNT problems it runs once from a constant a and once from
// the surrogate's answer: the mean of SEEDS answers to the same problem (piddm solve; all problems
// and seeds in one batch), whose pointwise standard deviation is the surrogate's own uncertainty;
// the program reports how often the truth lies within 2 std.
// The two runs are timed by fair.hpp's rule: each to its first iterate within 1 % of the better of
// the two final misfits, the surrogate's inference added to its run.
// Writes OUT_DIR/inverse.txt (numbers, misfit histories) and OUT_DIR/inverse.f32 (fields).
#include "fair.hpp"
#include "surrogate.hpp"

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iostream>
#include <random>

namespace {

struct problem {
    darcy::grid g;
    darcy::field b;                  // right-hand side
    std::vector<std::size_t> where;  // observed points
    std::vector<double> d;           // observed u there
    double beta;                     // smoothness weight on log a
};

struct state {
    darcy::field u, lambda;  // last forward and adjoint solutions (warm starts for the next PCG)
};

// J(m) and its gradient, by one forward and one adjoint solve.
double objective(const problem &pb, const darcy::field &m, darcy::field &grad, state &st, double *misfit) {
    const darcy::grid &g = pb.g;
    const std::size_t n = g.n, len = n * n;
    darcy::field a(len), rhs_adj(len, 0.0);
    for (std::size_t i = 0; i < len; ++i) a[i] = std::exp(m[i]);
    if (st.u.empty()) st.u.assign(len, 0.0), st.lambda.assign(len, 0.0);
    if (darcy::pcg(g, a, pb.b, st.u, {1e-12}).iters[0] < 0) throw std::runtime_error("forward PCG did not converge");
    double jd = 0, dd = 0;
    for (std::size_t k = 0; k < pb.where.size(); ++k) {
        const double r = st.u[pb.where[k]] - pb.d[k];
        jd += 0.5 * r * r, dd += pb.d[k] * pb.d[k];
        rhs_adj[pb.where[k]] = -r;
    }
    if (darcy::pcg(g, a, rhs_adj, st.lambda, {1e-12}).iters[0] < 0 && std::sqrt(darcy::dot(rhs_adj, rhs_adj)) > 0)
        throw std::runtime_error("adjoint PCG did not converge");
    std::fill(grad.begin(), grad.end(), 0.0);
    darcy::apply_adjoint_a(g, st.u, st.lambda, grad);
    for (std::size_t i = 0; i < len; ++i) grad[i] *= a[i];
    double jr = 0;
    for (std::size_t j = 0; j < n; ++j)
        for (std::size_t i = 0; i < n; ++i) {
            const std::size_t p = j * n + i;
            for (std::size_t q : {i + 1 < n ? p + 1 : p, j + 1 < n ? p + n : p}) {
                if (q == p) continue;
                const double dm = m[p] - m[q];
                jr += 0.5 * pb.beta * dm * dm;
                grad[p] += pb.beta * dm, grad[q] -= pb.beta * dm;
            }
        }
    if (misfit) *misfit = std::sqrt(2 * jd / dd);
    return jd + jr;
}

struct history {
    std::vector<double> misfit;   // relative misfit before each iteration and after the last
    std::vector<double> seconds;  // elapsed at the same points
};

// L-BFGS (memory 10) with Armijo backtracking.
history lbfgs(const problem &pb, darcy::field &m, int iterations) {
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    const std::size_t len = m.size();
    state st;
    darcy::field grad(len), grad_new(len), dir(len), trial(len);
    double misfit = 0, misfit_new = 0;
    double j = objective(pb, m, grad, st, &misfit);
    std::vector<double> objective_history{j};
    history out{{misfit}, {elapsed()}};
    std::deque<std::pair<darcy::field, darcy::field>> mem;  // (s, y)
    for (int it = 0; it < iterations; ++it) {
        // two-loop recursion: dir = -H grad
        dir = grad;
        std::vector<double> alpha(mem.size());
        for (std::size_t k = mem.size(); k-- > 0;) {
            const auto &[s, y] = mem[k];
            alpha[k] = darcy::dot(s, dir) / darcy::dot(y, s);
            for (std::size_t i = 0; i < len; ++i) dir[i] -= alpha[k] * y[i];
        }
        double gamma;
        if (mem.empty()) {
            double gmax = 0;
            for (double v : grad) gmax = std::max(gmax, std::abs(v));
            gamma = gmax > 0 ? 0.5 / gmax : 1.0;  // first step moves log a by at most 0.5
        } else {
            const auto &[s, y] = mem.back();
            gamma = darcy::dot(s, y) / darcy::dot(y, y);
        }
        for (double &v : dir) v *= gamma;
        for (std::size_t k = 0; k < mem.size(); ++k) {
            const auto &[s, y] = mem[k];
            const double beta = darcy::dot(y, dir) / darcy::dot(y, s);
            for (std::size_t i = 0; i < len; ++i) dir[i] += s[i] * (alpha[k] - beta);
        }
        for (double &v : dir) v = -v;
        const double slope = darcy::dot(grad, dir);
        if (!(slope < 0)) break;
        double step = 1.0, j_new = 0;
        bool accepted = false;
        for (int ls = 0; ls < 30 && !accepted; ++ls, step *= 0.5) {
            for (std::size_t i = 0; i < len; ++i) trial[i] = m[i] + step * dir[i];
            state st_trial = st;
            j_new = objective(pb, trial, grad_new, st_trial, &misfit_new);
            if (j_new <= j + 1e-4 * step * slope) {
                accepted = true;
                st = std::move(st_trial);
            }
        }
        if (!accepted) break;
        darcy::field s(len), y(len);
        for (std::size_t i = 0; i < len; ++i) s[i] = trial[i] - m[i], y[i] = grad_new[i] - grad[i];
        if (darcy::dot(s, y) > 1e-300) {
            mem.emplace_back(std::move(s), std::move(y));
            if (mem.size() > 10) mem.pop_front();
        }
        m = trial, grad = grad_new;
        out.misfit.push_back(misfit_new);
        out.seconds.push_back(elapsed());
        // converged: the objective fell by less than 1e-5 of itself over the last 10 iterations
        objective_history.push_back(j_new);
        const std::size_t h = objective_history.size();
        if (h > 10 && objective_history[h - 11] - j_new < 1e-5 * j_new) break;
        j = j_new;
    }
    return out;
}

double error_rate(const darcy::field &a, const float *truth, double threshold) {
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < a.size(); ++i) wrong += (a[i] >= threshold) != (truth[i] >= threshold);
    return double(wrong) / double(a.size());
}

problem make_problem(const darcy::fields &pf, std::size_t index, double fraction, std::uint64_t seed,
                     double beta_scale) {
    problem pb{darcy::grid{pf.nx}, darcy::rhs(darcy::grid{pf.nx}, pf.at(index, 2)), {}, {}, 0.0};
    std::vector<std::size_t> interior;
    pb.g.interior([&](std::size_t p) { interior.push_back(p); });
    std::mt19937_64 rng(seed);
    std::shuffle(interior.begin(), interior.end(), rng);
    const std::size_t k = std::max<std::size_t>(1, std::size_t(std::lround(fraction * double(pf.plane()))));
    pb.where.assign(interior.begin(), interior.begin() + std::min(k, interior.size()));
    std::sort(pb.where.begin(), pb.where.end());
    for (std::size_t p : pb.where) pb.d.push_back(pf.at(index, 1)[p]);
    // weight of the smoothness term, relative to the data term's scale
    double dd = 0;
    for (double v : pb.d) dd += v * v;
    pb.beta = beta_scale * dd / double(pb.where.size());
    return pb;
}

int check_gradient(const darcy::fields &pf) {
    problem pb = make_problem(pf, 0, 0.05, 7, 1e-4);
    const std::size_t len = pf.plane();
    darcy::field m(len), grad(len), scratch(len);
    std::mt19937_64 rng(3);
    std::normal_distribution<double> normal(0.0, 0.3);
    for (double &v : m) v = std::log(7.5) + normal(rng);
    state st;
    objective(pb, m, grad, st, nullptr);
    double worst = 0;
    const std::size_t n = pf.nx;
    for (std::size_t p : {n + 1, 5 * n + 7, len / 2 + n / 2, len - n - 2, std::size_t(3)}) {
        const double h = 1e-5;
        darcy::field mp = m, mm = m;
        mp[p] += h, mm[p] -= h;
        state s1, s2;
        const double fd = (objective(pb, mp, scratch, s1, nullptr) - objective(pb, mm, scratch, s2, nullptr)) / (2 * h);
        const double rel = std::abs(fd - grad[p]) / std::max(std::abs(fd), 1e-12 * std::abs(grad[p]) + 1e-30);
        std::printf("  d J / d m[%zu]: adjoint %.10e, finite difference %.10e, relative difference %.2e\n", p, grad[p],
                    fd, rel);
        worst = std::max(worst, rel);
    }
    std::printf("adjoint gradient against central differences: worst relative difference %.2e\n", worst);
    return worst <= 1e-4 ? 0 : 1;
}

struct outcome {
    std::vector<double> h_const, h_sur;  // misfit histories
    double s_const = 0, s_reach = 0;     // seconds: the constant run, the surrogate run to its misfit
    int reach = -1;                      // first surrogate-start iteration at the constant's final misfit
    int const_1pct = 0, sur_1pct = 0;    // first iterations within 1 % of that misfit
    fair::reach fair_const{}, fair_sur{}; // each run to within 1 % of the better final misfit
    double err_const = 0, err_sur = 0, err_mean = 0, coverage = 0;
    darcy::field mean, sd, a_const, a_sur;
};

int first_at_or_below(const std::vector<double> &h, double level) {
    for (std::size_t k = 0; k < h.size(); ++k)
        if (h[k] <= level) return int(k);
    return -1;
}

}  // namespace

int main(int argc, char **argv) try {
    if (argc == 3 && std::string(argv[1]) == "--check-gradient") return check_gradient(darcy::read_fields(argv[2]));
    if (argc == 2 && std::string(argv[1]) == "--check-fair-timing") {
        const int bad = fair::check();
        std::printf("fair timing rule on synthetic curves: %s\n", bad ? "FAILED" : "ok");
        return bad ? 1 : 0;
    }
    if (argc < 4) {
        std::fprintf(stderr,
                     "usage: %s MODEL.onnx PROBLEMS.f32 OUT_DIR [COUNT] [FRACTION] [SEEDS] [ITERATIONS] [STEPS]\n"
                     "       %s --check-gradient PROBLEMS.f32\n       %s --check-fair-timing\n",
                     argv[0], argv[0], argv[0]);
        return 2;
    }
    const std::string out_dir = argv[3];
    const darcy::fields pf = darcy::read_fields(argv[2]);
    const std::size_t count = argc > 4 ? std::stoul(argv[4]) : 4;
    const double fraction = argc > 5 ? std::stod(argv[5]) : 0.05;
    const std::size_t seeds = argc > 6 ? std::stoul(argv[6]) : 8;
    const int iterations = argc > 7 ? std::stoi(argv[7]) : 150;
    if (count < 1 || count > pf.count || seeds < 2 || fraction <= 0 || fraction > 1 || iterations < 1)
        throw std::invalid_argument("COUNT outside [1, problems], SEEDS < 2, FRACTION outside (0, 1] or ITERATIONS < 1");
    piddm::model model(argv[1]);
    surrogate::check_grid(model, pf);
    piddm_solve_params params = model.default_solve_params();
    if (argc > 8) params.steps = std::int64_t(std::stoul(argv[8]));
    params.seed = 11;
    // the answers spread over seeds at z's calibrated scale (the card's default, 0, answers alike):
    // 1.5 puts the truth within 2 std at 90-94 % (trainer/results/amortised/conditional.md)
    params.noise_scale = 1.5;
    const std::size_t plane = pf.plane(), field = 2 * plane;
    // the two phases of a, from the problems themselves
    double a_lo = 1e300, a_hi = -1e300;
    for (std::size_t p = 0; p < pf.count; ++p)
        for (std::size_t i = 0; i < plane; ++i)
            a_lo = std::min(a_lo, double(pf.at(p, 0)[i])), a_hi = std::max(a_hi, double(pf.at(p, 0)[i]));
    const double threshold = 0.5 * (a_lo + a_hi);
    const double beta_scale = std::getenv("PIDDM_INVERSE_BETA") ? std::stod(std::getenv("PIDDM_INVERSE_BETA")) : 1e-4;
    std::vector<problem> pbs;
    for (std::size_t p = 0; p < count; ++p) pbs.push_back(make_problem(pf, p, fraction, 2024 + p, beta_scale));

    // the surrogate: SEEDS answers to each sparse-u problem, all in one batch
    const std::size_t batch = count * seeds;
    std::vector<float> observed(batch * field, 0.0f);
    std::vector<std::uint8_t> mask(batch * field, 0);
    for (std::size_t p = 0; p < count; ++p)
        for (std::size_t k = 0; k < seeds; ++k)
            for (std::size_t q = 0; q < pbs[p].where.size(); ++q) {
                observed[(p * seeds + k) * field + plane + pbs[p].where[q]] = float(pbs[p].d[q]);
                mask[(p * seeds + k) * field + plane + pbs[p].where[q]] = 1;
            }
    const auto t0 = std::chrono::steady_clock::now();
    const piddm::solve_result answers = model.solve(observed, mask, batch, params);
    const double t_inf = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(count);

    std::vector<outcome> outs(count);
    for (std::size_t p = 0; p < count; ++p) {
        outcome &o = outs[p];
        const float *a_true = pf.at(p, 0);
        o.mean.assign(plane, 0.0), o.sd.assign(plane, 0.0);
        for (std::size_t k = 0; k < seeds; ++k)
            for (std::size_t i = 0; i < plane; ++i) o.mean[i] += answers.fields[(p * seeds + k) * field + i] / double(seeds);
        for (std::size_t k = 0; k < seeds; ++k)
            for (std::size_t i = 0; i < plane; ++i) {
                const double e = answers.fields[(p * seeds + k) * field + i] - o.mean[i];
                o.sd[i] += e * e / double(seeds - 1);
            }
        std::size_t covered = 0;
        for (std::size_t i = 0; i < plane; ++i) {
            o.sd[i] = std::sqrt(o.sd[i]);
            covered += std::abs(a_true[i] - o.mean[i]) <= 2 * o.sd[i];
        }
        o.coverage = double(covered) / double(plane);
        // the classical inversion from a constant and from the surrogate's mean
        darcy::field m_const(plane, std::log(threshold)), m_sur(plane);
        for (std::size_t i = 0; i < plane; ++i) m_sur[i] = std::log(std::clamp(o.mean[i], a_lo, a_hi));
        const history hc = lbfgs(pbs[p], m_const, iterations), hs = lbfgs(pbs[p], m_sur, iterations);
        o.h_const = hc.misfit, o.h_sur = hs.misfit;
        const double target = o.h_const.back();
        o.reach = first_at_or_below(o.h_sur, target);
        o.s_const = hc.seconds.back();
        o.s_reach = hs.seconds[o.reach < 0 ? hs.seconds.size() - 1 : std::size_t(o.reach)];
        o.const_1pct = first_at_or_below(o.h_const, 1.01 * target);
        o.sur_1pct = first_at_or_below(o.h_sur, 1.01 * target);
        const double level = fair::level(o.h_const, o.h_sur);
        o.fair_const = fair::to_level(o.h_const, hc.seconds, level);
        o.fair_sur = fair::to_level(o.h_sur, hs.seconds, level);
        o.a_const.resize(plane), o.a_sur.resize(plane);
        for (std::size_t i = 0; i < plane; ++i) o.a_const[i] = std::exp(m_const[i]), o.a_sur[i] = std::exp(m_sur[i]);
        o.err_const = error_rate(o.a_const, a_true, threshold);
        o.err_sur = error_rate(o.a_sur, a_true, threshold);
        o.err_mean = error_rate(o.mean, a_true, threshold);
    }

    auto med = [&](auto get) {
        std::vector<double> v;
        for (const outcome &o : outs) v.push_back(double(get(o)));
        return darcy::median(v);
    };
    const double it_const = med([](const outcome &o) { return o.h_const.size() - 1; });
    const double it_reach = med([](const outcome &o) { return o.reach < 0 ? double(o.h_sur.size() - 1) : o.reach; });
    const double c1 = med([](const outcome &o) { return o.const_1pct; });
    const double s1 = med([](const outcome &o) { return o.sur_1pct < 0 ? double(o.h_sur.size() - 1) : o.sur_1pct; });
    std::size_t reached = 0;
    for (const outcome &o : outs) reached += o.reach >= 0;

    std::printf("inverse (C++): %zu problems, %zu observed points of u each (%.1f %%), beta %.1e x mean d^2\n", count,
                pbs[0].where.size(), 100 * fraction, beta_scale);
    std::printf("  surrogate: %zu seeds per problem, %lld steps, %.2f s per problem; median error rate of the mean a "
                "%.2f %%; truth within 2 std at %.1f %% of points\n",
                seeds, (long long)params.steps, t_inf, 100 * med([](const outcome &o) { return o.err_mean; }),
                100 * med([](const outcome &o) { return o.coverage; }));
    std::printf("  problem 0: iteration | relative misfit from constant | from surrogate\n");
    const outcome &o0 = outs[0];
    const std::size_t rows = std::max(o0.h_const.size(), o0.h_sur.size());
    for (std::size_t k = 0; k < rows; ++k)
        if (k < 10 || k % 10 == 0 || k + 1 == rows)
            std::printf("  %9zu | %.4e | %.4e\n", k, k < o0.h_const.size() ? o0.h_const[k] : o0.h_const.back(),
                        k < o0.h_sur.size() ? o0.h_sur[k] : o0.h_sur.back());
    std::printf("  problem | constant: iterations, final misfit, to 1 %% of it | surrogate: reaches it at, to 1 %% | "
                "error rate of a: constant, surrogate\n");
    for (std::size_t p = 0; p < count; ++p) {
        const outcome &o = outs[p];
        std::printf("  %7zu | %4zu  %.3e  %4d | %4d  %4d | %6.2f %%  %6.2f %%\n", p, o.h_const.size() - 1,
                    o.h_const.back(), o.const_1pct, o.reach, o.sur_1pct, 100 * o.err_const, 100 * o.err_sur);
    }
    std::printf("  median seconds: constant run %.3f; surrogate run to its misfit %.3f, plus %.2f of inference\n",
                med([](const outcome &o) { return o.s_const; }), med([](const outcome &o) { return o.s_reach; }), t_inf);
    std::printf("  fair rule, each run to within 1 %% of the better final misfit: constant %.3f s (%.1f iterations); "
                "surrogate %.3f s (%.1f iterations) + %.3f s of inference\n",
                med([](const outcome &o) { return o.fair_const.seconds; }),
                med([](const outcome &o) { return o.fair_const.iteration; }),
                med([](const outcome &o) { return o.fair_sur.seconds; }),
                med([](const outcome &o) { return o.fair_sur.iteration; }), t_inf);
    std::printf("  median: the surrogate start reaches the constant start's final misfit in %.1f of its %.1f "
                "iterations (%.1f %%; %zu of %zu reached it); within 1 %% of it: %.1f vs %.1f\n",
                it_reach, it_const, 100 * it_reach / it_const, reached, count, s1, c1);

    std::ofstream kv(out_dir + "/inverse.txt");
    kv << "problems = " << count << "\nobserved_fraction = " << fraction
       << "\nobserved_points = " << pbs[0].where.size() << "\nbeta_scale = " << beta_scale << "\nseeds = " << seeds
       << "\nsurrogate_steps = " << params.steps << "\nsurrogate_seconds_per_problem = " << t_inf
       << "\nerror_rate_a_surrogate_mean = " << med([](const outcome &o) { return o.err_mean; })
       << "\ncoverage_2std = " << med([](const outcome &o) { return o.coverage; })
       << "\niterations_constant = " << it_const << "\niterations_surrogate_to_reach = " << it_reach
       << "\niterations_constant_to_1pct = " << c1 << "\niterations_surrogate_to_1pct = " << s1
       << "\nseconds_constant = " << med([](const outcome &o) { return o.s_const; })
       << "\nseconds_surrogate_to_reach = " << med([](const outcome &o) { return o.s_reach; })
       << "\nseconds_constant_fair = " << med([](const outcome &o) { return o.fair_const.seconds; })
       << "\nseconds_surrogate_fair = " << med([](const outcome &o) { return o.fair_sur.seconds; })
       << "\niterations_constant_fair = " << med([](const outcome &o) { return o.fair_const.iteration; })
       << "\niterations_surrogate_fair = " << med([](const outcome &o) { return o.fair_sur.iteration; })
       << "\nfair_reached_constant = " << std::count_if(outs.begin(), outs.end(), [](const outcome &o) { return o.fair_const.reached; })
       << "\nfair_reached_surrogate = " << std::count_if(outs.begin(), outs.end(), [](const outcome &o) { return o.fair_sur.reached; })
       << "\nreached = " << reached << "\nfinal_misfit_constant = " << med([](const outcome &o) { return o.h_const.back(); })
       << "\nerror_rate_a_constant = " << med([](const outcome &o) { return o.err_const; })
       << "\nerror_rate_a_surrogate = " << med([](const outcome &o) { return o.err_sur; }) << "\n";
    for (std::size_t p = 0; p < count; ++p) {
        kv << "misfit_constant_" << p << " =";
        for (double v : outs[p].h_const) kv << ' ' << v;
        kv << "\nmisfit_surrogate_" << p << " =";
        for (double v : outs[p].h_sur) kv << ' ' << v;
        kv << "\n";
    }
    if (!kv) throw std::runtime_error("cannot write " + out_dir + "/inverse.txt");

    darcy::fields fig{std::uint32_t(count), 7, pf.ny, pf.nx, std::vector<float>(count * 7 * plane, 0.0f)};
    for (std::size_t p = 0; p < count; ++p) {
        const outcome &o = outs[p];
        for (std::size_t i = 0; i < plane; ++i) {
            fig.at(p, 0)[i] = pf.at(p, 0)[i];
            fig.at(p, 1)[i] = pf.at(p, 1)[i];
            fig.at(p, 3)[i] = float(o.mean[i]);
            fig.at(p, 4)[i] = float(o.sd[i]);
            fig.at(p, 5)[i] = float(o.a_const[i]);
            fig.at(p, 6)[i] = float(o.a_sur[i]);
        }
        for (std::size_t q : pbs[p].where) fig.at(p, 2)[q] = 1.0f;
    }
    darcy::write_fields(out_dir + "/inverse.f32", fig);
    return 0;
} catch (const std::exception &e) {
    std::fprintf(stderr, "darcy_inverse: %s\n", e.what());
    return 1;
}
