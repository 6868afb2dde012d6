// The posterior of the permeability given a few noisy head measurements: a reference by MCMC with
// the exact solver, against the surrogate's answers to the same data.
//
//   darcy_posterior MODEL.onnx PROBLEMS.f32 OUT_DIR [COUNT] [SENSORS] [NOISE] [CHAINS] [STEPS] [ANSWERS] [NOISE_SCALE]
//   darcy_posterior --check-linear-gaussian      (pCN against a posterior known in closed form)
//
// The data: u of each of the first COUNT problems at SENSORS interior points (16, 50, 0.01 by
// default), plus Gaussian noise of NOISE times the problem's peak |u|. The prior is the data's own,
// read from the model card: a = a_hi where a periodic GRF(alpha, tau) >= 0, else a_lo, the GRF
// written as a linear map of 2 n^2 standard normal coefficients (the trainer's spectral sampler,
// trainer/src/pde/grf.rs). The reference: CHAINS pCN chains of STEPS proposals each (4, 100 000), the
// first half burn-in, over those coefficients, each proposal one solve of this program's own Darcy
// operator (banded Cholesky, darcy::cholesky_solve; checked against PCG at start); R-hat and effective sample
// sizes say whether they agree. The surrogate: ANSWERS one-call answers per problem (64) through
// piddm_solve, different seeds, z scaled by NOISE_SCALE (1.5, the scale whose spread was calibrated on
// the model's own tasks), all problems in one batch.
// Chains run side by side on PIDDM_POSTERIOR_THREADS threads (default: one per core).
// Writes OUT_DIR/posterior.txt (numbers) and OUT_DIR/posterior.f32 (per problem: true a, sensors,
// MCMC mean and std of a, the surrogate's mean and std of a).
#include "pcn.hpp"
#include "surrogate.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <iostream>
#include <numeric>

namespace {

// A number of the model card (JSON) by its key: the first `"key": value`.
double card_number(const std::string &card, const std::string &key) {
    const std::size_t at = card.find("\"" + key + "\"");
    if (at == std::string::npos) throw std::runtime_error("the model card has no " + key);
    const std::size_t colon = card.find(':', at);
    return std::stod(card.substr(colon + 1));
}

// g = (1/n^2) Re sum_k amp_k (xi_k + i eta_k) e^{2 pi i k.x / n}: the inverse FFT of the trainer's
// sampler as a real map of theta = (xi, eta), applied by separable cosine and sine sums.
struct grf {
    std::size_t n;
    pcn::vec amp, cs, sn;  // amp [ky][kx] / n^2; cos and sin tables [k][x]
    grf(std::size_t n_, double alpha, double tau) : n(n_), amp(n_ * n_), cs(n_ * n_), sn(n_ * n_) {
        const double pi = 3.14159265358979323846;
        auto wave = [&](std::size_t i) { return i < (n + 1) / 2 ? double(i) : double(i) - double(n); };
        const double sigma = std::pow(tau, 0.5 * (2 * alpha - 2));
        for (std::size_t j = 0; j < n; ++j)
            for (std::size_t i = 0; i < n; ++i) {
                const double kx = wave(i), ky = wave(j);
                const double lam = 4 * pi * pi * (kx * kx + ky * ky) + tau * tau;
                amp[j * n + i] = (i == 0 && j == 0) ? 0.0 : std::sqrt(2.0) * sigma * std::pow(lam, -alpha / 2);
            }
        for (std::size_t k = 0; k < n; ++k)
            for (std::size_t x = 0; x < n; ++x) {
                cs[k * n + x] = std::cos(2 * pi * double(k * x) / double(n));
                sn[k * n + x] = std::sin(2 * pi * double(k * x) / double(n));
            }
    }
    std::size_t dim() const { return 2 * n * n; }
    // xi cos(tx + ty) - eta sin(tx + ty) = cos ty (xi cos tx - eta sin tx) - sin ty (xi sin tx + eta cos tx)
    void field(const pcn::vec &theta, pcn::vec &g) const {
        const std::size_t nn = n * n;
        pcn::vec A(nn, 0.0), B(nn, 0.0);
        for (std::size_t ky = 0; ky < n; ++ky)
            for (std::size_t kx = 0; kx < n; ++kx) {
                const double p = amp[ky * n + kx] * theta[ky * n + kx], q = amp[ky * n + kx] * theta[nn + ky * n + kx];
                if (p == 0 && q == 0) continue;
                const double *c = &cs[kx * n], *s = &sn[kx * n];
                double *a = &A[ky * n], *b = &B[ky * n];
                for (std::size_t x = 0; x < n; ++x) a[x] += p * c[x] - q * s[x], b[x] += p * s[x] + q * c[x];
            }
        g.assign(nn, 0.0);
        for (std::size_t ky = 0; ky < n; ++ky) {
            const double *a = &A[ky * n], *b = &B[ky * n];
            for (std::size_t y = 0; y < n; ++y) {
                const double c = cs[ky * n + y], s = sn[ky * n + y];
                double *row = &g[y * n];
                for (std::size_t x = 0; x < n; ++x) row[x] += c * a[x] - s * b[x];
            }
        }
    }
};

struct prior {
    grf g;
    double a_lo, a_hi;
    darcy::field a(const pcn::vec &theta) const {
        darcy::field v;
        g.field(theta, v);
        for (double &e : v) e = e >= 0 ? a_hi : a_lo;
        return v;
    }
};

struct data {
    std::vector<std::size_t> where;  // sensor points
    std::vector<double> d;           // noisy u there
    double sigma;                    // noise standard deviation
};

data measure(const darcy::fields &pf, std::size_t p, std::size_t sensors, double noise, std::uint64_t seed) {
    const std::size_t n = pf.nx;
    std::vector<std::size_t> interior;
    for (std::size_t j = 1; j + 1 < n; ++j)
        for (std::size_t i = 1; i + 1 < n; ++i) interior.push_back(j * n + i);
    std::mt19937_64 rng(seed);
    std::shuffle(interior.begin(), interior.end(), rng);
    data m;
    m.where.assign(interior.begin(), interior.begin() + std::ptrdiff_t(sensors));
    std::sort(m.where.begin(), m.where.end());
    const float *u = pf.at(p, 1);
    double peak = 0;
    for (std::size_t i = 0; i < pf.plane(); ++i) peak = std::max(peak, std::abs(double(u[i])));
    m.sigma = noise * peak;
    std::normal_distribution<double> normal;
    for (std::size_t w : m.where) m.d.push_back(u[w] + m.sigma * normal(rng));
    return m;
}

// MCMC summary of a over the pooled chains, with its convergence checks.
struct reference {
    pcn::vec mean, sd;
    std::vector<pcn::vec> draws;  // a at kept states, pooled (for the CRPS)
    double rhat_max = 0, rhat_over = 0, ess = 0, acceptance = 0, seconds = 0;
};

// The chains run side by side on `threads` threads (each chain its own solver state).
reference mcmc(const prior &pr, const darcy::grid &g, const darcy::field &b, const data &m, std::size_t chains,
               const pcn::settings &s, std::uint64_t seed, std::size_t threads) {
    const std::size_t plane = g.n * g.n;
    std::vector<pcn::chain> cs(chains);
    auto one_chain = [&](std::size_t c) {
        darcy::field u(plane, 0.0);
        darcy::field last_a;  // the last solve's a: a small step often leaves every phase as it was
        double last_phi = INFINITY;
        auto phi = [&](const pcn::vec &theta) -> double {
            darcy::field a = pr.a(theta);
            if (a == last_a) return last_phi;
            darcy::cholesky_solve(g, a, b, u);
            double e = 0;
            for (std::size_t k = 0; k < m.where.size(); ++k) e += std::pow(u[m.where[k]] - m.d[k], 2);
            last_a = std::move(a);
            return last_phi = e / (2 * m.sigma * m.sigma);
        };
        auto keep = [&](const pcn::vec &theta) { return pr.a(theta); };
        std::mt19937_64 rng(seed * 1000 + c);
        std::normal_distribution<double> normal;
        pcn::vec theta0(pr.g.dim());
        for (double &t : theta0) t = normal(rng);
        cs[c] = pcn::run(theta0, phi, keep, s, seed * 1000 + c + 500);
        std::fprintf(stderr, "  chain %zu: acceptance %.3f, beta %.4f, %.1f s\n", c, cs[c].acceptance, cs[c].beta,
                     cs[c].seconds);
    };
    std::atomic<std::size_t> next{0};
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < std::min(threads, chains); ++t)
        pool.emplace_back([&] {
            for (std::size_t c; (c = next++) < chains;) one_chain(c);
        });
    for (std::thread &t : pool) t.join();
    reference r;
    for (const pcn::chain &c : cs) {
        r.draws.insert(r.draws.end(), c.kept.begin(), c.kept.end());
        r.acceptance += c.acceptance / double(chains);
        r.seconds += c.seconds;
    }
    pcn::moments(r.draws, r.mean, r.sd);
    // R-hat per point (a's phase), where the chains' halves are not all one constant
    std::size_t defined = 0, over = 0;
    for (std::size_t i = 0; i < plane; ++i) {
        std::vector<pcn::vec> series;
        for (const pcn::chain &c : cs) {
            pcn::vec x;
            for (const pcn::vec &a : c.kept) x.push_back(a[i]);
            series.push_back(std::move(x));
        }
        const double rh = pcn::split_rhat(series);
        if (std::isnan(rh)) continue;
        ++defined, over += rh > 1.1;
        r.rhat_max = std::max(r.rhat_max, rh);
    }
    r.rhat_over = defined ? double(over) / double(defined) : 0.0;
    // effective samples: the smaller of the misfit's and the high phase's share, summed over chains
    double ess_misfit = 0, ess_share = 0;
    for (const pcn::chain &c : cs) {
        pcn::vec share;
        for (const pcn::vec &a : c.kept)
            share.push_back(double(std::count(a.begin(), a.end(), pr.a_hi)) / double(plane));
        ess_misfit += pcn::ess(c.trace), ess_share += pcn::ess(share);
    }
    r.ess = std::min(ess_misfit, ess_share);
    return r;
}

struct scores {
    double error_rate, coverage, crps, mean_sd;
};

// The error rate of the mean's phase against the truth's, coverage of the truth by mean +- 2 sd, the
// mean CRPS of the draws, the mean sd.
scores score(const std::vector<pcn::vec> &draws, const pcn::vec &mean, const pcn::vec &sd, const float *truth,
             double threshold) {
    const std::size_t plane = mean.size();
    scores s{0, 0, 0, 0};
    const std::size_t step = std::max<std::size_t>(1, draws.size() / 256);  // at most 256 draws for the CRPS
    for (std::size_t i = 0; i < plane; ++i) {
        s.error_rate += ((mean[i] >= threshold) != (truth[i] >= threshold)) / double(plane);
        s.coverage += (std::abs(truth[i] - mean[i]) <= 2 * sd[i]) / double(plane);
        pcn::vec x;
        for (std::size_t k = 0; k < draws.size(); k += step) x.push_back(draws[k][i]);
        s.crps += pcn::crps(x, truth[i]) / double(plane);
        s.mean_sd += sd[i] / double(plane);
    }
    return s;
}

// pCN on y = H theta + noise, theta ~ N(0, I): the chain's mean and covariance against the closed
// form, Sigma = (I + H^T H / s^2)^-1, mu = Sigma H^T y / s^2.
int check_linear_gaussian() {
    const std::size_t d = 4, m = 3;
    const double s = 0.5;
    const double H[m][d] = {{1.0, 0.5, 0.0, -0.3}, {0.0, 1.0, -0.7, 0.2}, {0.4, 0.0, 0.3, 1.0}};
    const double y[m] = {0.8, -0.4, 1.1};
    // P = I + H^T H / s^2 and b = H^T y / s^2, solved by Gauss-Jordan for Sigma and mu
    double P[d][2 * d] = {}, b[d] = {};
    for (std::size_t i = 0; i < d; ++i) {
        for (std::size_t j = 0; j < d; ++j) {
            for (std::size_t k = 0; k < m; ++k) P[i][j] += H[k][i] * H[k][j] / (s * s);
            P[i][j] += i == j;
            P[i][d + j] = i == j;
        }
        for (std::size_t k = 0; k < m; ++k) b[i] += H[k][i] * y[k] / (s * s);
    }
    for (std::size_t c = 0; c < d; ++c) {
        const double piv = P[c][c];
        for (double &v : P[c]) v /= piv;
        for (std::size_t r = 0; r < d; ++r)
            if (r != c) {
                const double f = P[r][c];
                for (std::size_t j = 0; j < 2 * d; ++j) P[r][j] -= f * P[c][j];
            }
    }
    double mu[d] = {};
    for (std::size_t i = 0; i < d; ++i)
        for (std::size_t j = 0; j < d; ++j) mu[i] += P[i][d + j] * b[j];
    auto phi = [&](const pcn::vec &t) {
        double e = 0;
        for (std::size_t k = 0; k < m; ++k) {
            double r = -y[k];
            for (std::size_t i = 0; i < d; ++i) r += H[k][i] * t[i];
            e += r * r;
        }
        return e / (2 * s * s);
    };
    pcn::settings st;
    st.steps = 400000, st.burn_in = 20000, st.thin = 5;
    std::vector<pcn::chain> cs;
    for (std::uint64_t c = 0; c < 4; ++c)
        cs.push_back(pcn::run(pcn::vec(d, c % 2 ? 2.0 : -2.0), phi, [](const pcn::vec &t) { return t; }, st, 7 + c));
    std::vector<pcn::vec> all;
    for (const auto &c : cs) all.insert(all.end(), c.kept.begin(), c.kept.end());
    double worst_mean = 0, worst_cov = 0, worst_rhat = 0;
    pcn::vec mean(d, 0.0);
    for (const auto &t : all)
        for (std::size_t i = 0; i < d; ++i) mean[i] += t[i] / double(all.size());
    for (std::size_t i = 0; i < d; ++i) {
        worst_mean = std::max(worst_mean, std::abs(mean[i] - mu[i]));
        for (std::size_t j = 0; j < d; ++j) {
            double c = 0;
            for (const auto &t : all) c += (t[i] - mean[i]) * (t[j] - mean[j]) / double(all.size() - 1);
            worst_cov = std::max(worst_cov, std::abs(c - P[i][d + j]));
        }
        std::vector<pcn::vec> series;
        for (const auto &ch : cs) {
            pcn::vec x;
            for (const auto &t : ch.kept) x.push_back(t[i]);
            series.push_back(x);
        }
        worst_rhat = std::max(worst_rhat, pcn::split_rhat(series));
    }
    double ess = 0;
    for (const auto &c : cs) ess += pcn::ess(c.trace);
    std::printf("linear-Gaussian pCN: |mean - mu| <= %.4f, |cov - Sigma| <= %.4f, R-hat <= %.4f, ESS %.0f, "
                "acceptance %.3f\n",
                worst_mean, worst_cov, worst_rhat, ess, cs[0].acceptance);
    const bool ok = worst_mean < 0.03 && worst_cov < 0.03 && worst_rhat < 1.01 && ess > 1000;
    std::printf("%s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) try {
    if (argc == 2 && std::string(argv[1]) == "--check-linear-gaussian") return check_linear_gaussian();
    if (argc < 4) {
        std::fprintf(stderr,
                     "usage: %s MODEL.onnx PROBLEMS.f32 OUT_DIR [COUNT] [SENSORS] [NOISE] [CHAINS] [STEPS] [ANSWERS] "
                     "[NOISE_SCALE]\n       %s --check-linear-gaussian\n",
                     argv[0], argv[0]);
        return 2;
    }
    const std::string out_dir = argv[3];
    const darcy::fields pf = darcy::read_fields(argv[2]);
    const std::size_t count = argc > 4 ? std::stoul(argv[4]) : 16;
    const std::size_t sensors = argc > 5 ? std::stoul(argv[5]) : 50;
    const double noise = argc > 6 ? std::stod(argv[6]) : 0.01;
    const std::size_t chains = argc > 7 ? std::stoul(argv[7]) : 4;
    const std::size_t steps = argc > 8 ? std::stoul(argv[8]) : 100000;
    const std::size_t answers = argc > 9 ? std::stoul(argv[9]) : 64;
    const double noise_scale = argc > 10 ? std::stod(argv[10]) : 1.5;
    const char *threads_env = std::getenv("PIDDM_POSTERIOR_THREADS");
    const std::size_t threads =
        threads_env ? std::stoul(threads_env) : std::max(1u, std::thread::hardware_concurrency());
    const std::size_t plane = pf.plane(), field = 2 * plane;
    if (count < 1 || count > pf.count || sensors < 1 || sensors > (pf.nx - 2) * (pf.ny - 2) || !(noise > 0) ||
        chains < 2 || steps < 100 || answers < 2 || count * answers > PIDDM_MAX_BATCH || !(noise_scale >= 0))
        throw std::invalid_argument("COUNT outside [1, problems], SENSORS outside [1, interior points], NOISE <= 0, "
                                    "CHAINS < 2, STEPS < 100, ANSWERS < 2, COUNT x ANSWERS over PIDDM_MAX_BATCH or "
                                    "NOISE_SCALE < 0");
    piddm::model model(argv[1]);
    surrogate::check_grid(model, pf);
    const std::string card = model.card();
    const prior pr{grf(pf.nx, card_number(card, "alpha"), card_number(card, "tau")), card_number(card, "a_lo"),
                   card_number(card, "a_hi")};
    const double threshold = 0.5 * (pr.a_lo + pr.a_hi);
    const darcy::grid g{pf.nx};
    std::vector<data> ms;
    for (std::size_t p = 0; p < count; ++p) ms.push_back(measure(pf, p, sensors, noise, 4049 + p));
    {
        // the sampler's solver against the problems' own u (the data's sparse Cholesky, float32)
        darcy::field u;
        const darcy::field a = darcy::to_field(pf.at(0, 0), plane);
        darcy::cholesky_solve(g, a, darcy::rhs(g, pf.at(0, 2)), u);
        const double e = darcy::rel_l2(u, darcy::to_field(pf.at(0, 1), plane));
        std::fprintf(stderr, "banded Cholesky against the problems' u: relative L2 %.2e\n", e);
        if (!(e < 1e-5)) throw std::runtime_error("the forward solver disagrees with the problems' u");
    }

    // the surrogate: ANSWERS one-call answers to each problem's data, all in one batch
    piddm_solve_params params = model.default_solve_params();
    params.steps = 0, params.start = PIDDM_START_AMORTISED, params.noise_scale = noise_scale, params.seed = 3;
    const std::size_t batch = count * answers;
    std::vector<float> observed(batch * field, 0.0f);
    std::vector<std::uint8_t> mask(batch * field, 0);
    for (std::size_t p = 0; p < count; ++p)
        for (std::size_t k = 0; k < answers; ++k)
            for (std::size_t q = 0; q < sensors; ++q) {
                observed[(p * answers + k) * field + plane + ms[p].where[q]] = float(ms[p].d[q]);
                mask[(p * answers + k) * field + plane + ms[p].where[q]] = 1;
            }
    // one warm-up call first: sessions are made on first use, a cost a long-lived program pays once
    model.solve(std::vector<float>(observed.begin(), observed.begin() + std::ptrdiff_t(field)),
                std::vector<std::uint8_t>(mask.begin(), mask.begin() + std::ptrdiff_t(field)), 1, params);
    const auto t0 = std::chrono::steady_clock::now();
    const piddm::solve_result sur = model.solve(observed, mask, batch, params);
    const double t_sur = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(count);

    pcn::settings st;
    st.steps = steps, st.burn_in = steps / 2, st.thin = std::max<std::size_t>(1, steps / 2 / 500);
    darcy::fields outf;
    outf.count = std::uint32_t(count), outf.channels = 6, outf.ny = pf.ny, outf.nx = pf.nx;
    outf.data.assign(std::size_t(count) * 6 * plane, 0.0f);
    std::ofstream txt(out_dir + "/posterior.txt");
    if (!txt) throw std::runtime_error("cannot write " + out_dir + "/posterior.txt");
    std::vector<double> col[16];
    for (std::size_t p = 0; p < count; ++p) {
        std::fprintf(stderr, "problem %zu of %zu: %zu chains of %zu pCN steps\n", p + 1, count, chains, steps);
        const darcy::field b = darcy::rhs(g, pf.at(p, 2));
        const reference ref = mcmc(pr, g, b, ms[p], chains, st, 17 + p, threads);
        std::vector<pcn::vec> draws;
        for (std::size_t k = 0; k < answers; ++k) {
            const float *a = &sur.fields[(p * answers + k) * field];
            draws.emplace_back(a, a + plane);
        }
        pcn::vec mean, sd;
        pcn::moments(draws, mean, sd);
        const float *truth = pf.at(p, 0);
        const scores sm = score(ref.draws, ref.mean, ref.sd, truth, threshold);
        const scores ss = score(draws, mean, sd, truth, threshold);
        double disagree = 0;
        for (std::size_t i = 0; i < plane; ++i)
            disagree += ((mean[i] >= threshold) != (ref.mean[i] >= threshold)) / double(plane);
        const double values[16] = {sm.error_rate, ss.error_rate, disagree,   sm.coverage,    ss.coverage,
                                   sm.crps,       ss.crps,       sm.mean_sd, ss.mean_sd,     ss.mean_sd / sm.mean_sd,
                                   ref.rhat_max,  ref.rhat_over, ref.ess,    ref.acceptance, ref.seconds / double(chains),
                                   ref.ess / ref.seconds};
        for (std::size_t k = 0; k < 16; ++k) col[k].push_back(values[k]);
        const std::string pre = "problem_" + std::to_string(p) + "_";
        txt << pre << "error_rate_mcmc = " << sm.error_rate << "\n" << pre << "error_rate_surrogate = " << ss.error_rate
            << "\n" << pre << "coverage_mcmc = " << sm.coverage << "\n" << pre << "coverage_surrogate = " << ss.coverage
            << "\n" << pre << "rhat_max = " << ref.rhat_max << "\n" << pre << "ess = " << ref.ess << "\n";
        float *o = outf.at(p, 0);
        std::copy_n(truth, plane, o);
        for (std::size_t w : ms[p].where) outf.at(p, 1)[w] = 1.0f;
        for (std::size_t i = 0; i < plane; ++i) {
            outf.at(p, 2)[i] = float(ref.mean[i]), outf.at(p, 3)[i] = float(ref.sd[i]);
            outf.at(p, 4)[i] = float(mean[i]), outf.at(p, 5)[i] = float(sd[i]);
        }
    }
    const char *names[16] = {"error_rate_mcmc_mean",  "error_rate_surrogate_mean", "disagreement_surrogate_mcmc",
                             "coverage_mcmc",         "coverage_surrogate",        "crps_mcmc",
                             "crps_surrogate",        "sd_mcmc",                   "sd_surrogate",
                             "sd_ratio",              "rhat_max",                  "rhat_points_over_1.1",
                             "ess",                   "acceptance",                "mcmc_seconds_per_chain",
                             "ess_per_second"};
    txt << "problems = " << count << "\nsensors = " << sensors << "\nnoise = " << noise << "\nchains = " << chains
        << "\nsteps = " << steps << "\nanswers = " << answers << "\nnoise_scale = " << noise_scale
        << "\nsurrogate_seconds_per_problem = " << t_sur << "\n";
    // means over the problems, and medians
    for (std::size_t k = 0; k < 16; ++k) {
        const double avg = std::accumulate(col[k].begin(), col[k].end(), 0.0) / double(count);
        txt << names[k] << " = " << avg << "\n" << names[k] << "_median = " << darcy::median(col[k]) << "\n";
    }
    const double chain_secs = std::accumulate(col[14].begin(), col[14].end(), 0.0) / double(count);
    txt << "time_ratio_chain_over_surrogate = " << chain_secs / t_sur << "\n";
    darcy::write_fields(out_dir + "/posterior.f32", outf);
    std::printf("posterior of a from %zu noisy sensors (%g of peak u), %zu problems: MCMC (%zu x %zu pCN steps) "
                "error rate %.4f, coverage %.3f; surrogate (%zu one-call answers) error rate %.4f, coverage %.3f, "
                "sd ratio %.2f, %.0fx less time than one chain\n",
                sensors, noise, count, chains, steps, darcy::median(col[0]), darcy::median(col[3]), answers,
                darcy::median(col[1]), darcy::median(col[4]), darcy::median(col[9]), chain_secs / t_sur);
    return 0;
} catch (const std::exception &e) {
    std::fprintf(stderr, "darcy_posterior: %s\n", e.what());
    return 1;
}
