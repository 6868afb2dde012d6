// The posterior of the permeability given a few noisy head measurements: a reference by MCMC with
// the exact solver, against the surrogate's answers to the same data.
//
//   darcy_posterior MODEL.onnx PROBLEMS.f32 OUT_DIR [COUNT] [SENSORS] [NOISE] [CHAINS] [STEPS] [ANSWERS] [NOISE_SCALE]
//                   [REPLICAS] [HOTTEST]
//   darcy_posterior --check-linear-gaussian      (both samplers against a posterior known in closed form)
//   darcy_posterior --check-tempering            (tempering finds both modes' weights where pCN cannot)
//   darcy_posterior --check-sign-inverse         (the answers' Gaussian: adjoints, variances by Monte Carlo)
//
// The data: u of each of the first COUNT problems at SENSORS interior points (16, 50, 0.01 by
// default), plus Gaussian noise of NOISE times the problem's peak |u|. The prior is the data's own,
// read from the model card: a = a_hi where a periodic GRF(alpha, tau) >= 0, else a_lo, the GRF
// written as a linear map of 2 n^2 standard normal coefficients (the trainer's spectral sampler,
// trainer/src/pde/grf.rs). The reference: CHAINS pCN chains of STEPS proposals each (4, 100 000), the
// first half burn-in, over those coefficients, each proposal one solve of this program's own Darcy
// operator (banded Cholesky, darcy::cholesky_solve; checked against PCG at start); R-hat and effective sample
// sizes say whether they agree. With REPLICAS > 1 (1 by default) each chain is tempered: REPLICAS
// pCN replicas on a ladder of likelihood temperatures from 1 to HOTTEST (1e4), neighbours swapping
// states (pcn::run_tempered), so the chains cross between the thresholded prior's modes; each
// replica's proposal is one solve. The surrogate: ANSWERS one-call answers per problem (64) through
// piddm_solve, different seeds, z scaled by NOISE_SCALE (1.0: the shipped encoder, trained on noisy
// sensors, measured best there against converged chains, examples/RESULTS.md), all problems in one
// batch. Then the exact posterior once more, the
// surrogate inside the sampler: the answers turned into a Gaussian on the coefficients
// (sign_inverse), the chains started from its draws and moving about it (pcn::run with `about`,
// the Metropolis-Hastings ratio keeping the target exact); effective samples per second and per
// solve against plain pCN, and the two means' agreement against pCN's own chain-to-chain spread.
// Chains run side by side on PIDDM_POSTERIOR_THREADS threads (default: one per core).
// Writes OUT_DIR/posterior.txt (numbers) and OUT_DIR/posterior.f32 (per problem: true a, sensors,
// MCMC mean and std of a, the surrogate's mean and std of a), and as each problem finishes its record
// (OUT_DIR/problem_P.txt, .f32): the same command after a stop resumes with the first problem that has
// no record for these settings. With PIDDM_POSTERIOR_REFERENCE=DIR, another model is scored against
// the chains of a finished run (DIR, the same settings and problems, any model): the reference's
// columns and fields are read from its records, only the surrogate's answers are made and scored
// (seconds, not the chains' hour), and the guided sampler, which needs this model's answers, is not
// run (its columns NaN).
#include "pcn.hpp"
#include "surrogate.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <memory>
#include <mutex>
#include <thread>
#include <iostream>
#include <numeric>
#include <tuple>

namespace {

// A number of the model card (JSON) by its key: the first `"key": value`.
double card_number(const std::string &card, const std::string &key) {
    const std::size_t at = card.find("\"" + key + "\"");
    if (at == std::string::npos) throw std::runtime_error("the model card has no " + key);
    const std::size_t colon = card.find(':', at);
    return std::stod(card.substr(colon + 1));
}

// A string of the model card (JSON) by its key: the first `"key": "value"`.
std::string card_string(const std::string &card, const std::string &key) {
    const std::size_t at = card.find("\"" + key + "\"");
    if (at == std::string::npos) throw std::runtime_error("the model card has no " + key);
    const std::size_t open = card.find('"', card.find(':', at) + 1);
    const std::size_t close = card.find('"', open + 1);
    if (open == std::string::npos || close == std::string::npos)
        throw std::runtime_error("the model card's " + key + " is not a string");
    return card.substr(open + 1, close - open - 1);
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
    // X[k] = sum_x (re + i im)[x] e^{sign 2 pi i k.x / n}, rows then columns
    void dft(const pcn::vec &re, const pcn::vec &im, pcn::vec &ore, pcn::vec &oim, double sign) const {
        const std::size_t nn = n * n;
        pcn::vec wr(nn, 0.0), wi(nn, 0.0);
        for (std::size_t y = 0; y < n; ++y)
            for (std::size_t k = 0; k < n; ++k) {
                double r = 0, i = 0;
                for (std::size_t x = 0; x < n; ++x) {
                    const double c = cs[k * n + x], s = sign * sn[k * n + x];
                    r += re[y * n + x] * c - im[y * n + x] * s, i += im[y * n + x] * c + re[y * n + x] * s;
                }
                wr[y * n + k] = r, wi[y * n + k] = i;
            }
        ore.assign(nn, 0.0), oim.assign(nn, 0.0);
        for (std::size_t k = 0; k < n; ++k)
            for (std::size_t y = 0; y < n; ++y) {
                const double c = cs[k * n + y], s = sign * sn[k * n + y];
                for (std::size_t x = 0; x < n; ++x) {
                    ore[k * n + x] += wr[y * n + x] * c - wi[y * n + x] * s;
                    oim[k * n + x] += wi[y * n + x] * c + wr[y * n + x] * s;
                }
            }
    }
    // theta = G^T v, G the map `field` applies: d g / d xi_k = amp_k cos(phi_k), d g / d eta_k =
    // -amp_k sin(phi_k), so G^T v is amp_k times the real and imaginary parts of v's forward DFT.
    void adjoint(const pcn::vec &v, pcn::vec &theta) const {
        const std::size_t nn = n * n;
        pcn::vec re, im;
        dft(v, pcn::vec(nn, 0.0), re, im, -1.0);
        theta.assign(2 * nn, 0.0);
        for (std::size_t k = 0; k < nn; ++k) theta[k] = amp[k] * re[k], theta[nn + k] = amp[k] * im[k];
    }
};

// The surrogate's answers as a Gaussian on the GRF's coefficients theta, for a chain to move about.
// An answer gives a's phases, the signs s of g = G theta. Under the prior (g Gaussian, stationary),
// s has covariance (2 / pi) asin(rho) (the arcsine law, rho g's correlation), a circulant that FFTs
// diagonalise, and E[theta s^T] = sqrt(2 / pi) G^T / sigma. The best linear estimate of theta from s
// is then theta(s) = sqrt(2 / pi) / sigma G^T Cov(s)^-1 s, its error covariance
// I - (2 / pi) / sigma^2 G^T Cov(s)^-1 G. The reference: the answers' estimates' mean, their spread
// (the columns U) plus that error covariance (D: the identity except along g's own directions, one
// per Fourier pair (k, -k), since xi_k and xi_-k move g along the same wave).
struct sign_inverse {
    const grf &g;
    double sigma;
    pcn::vec mu;  // Cov(s)'s eigenvalues, [ky][kx]
    std::vector<pcn::gaussian::direction> dirs;

    explicit sign_inverse(const grf &g_) : g(g_) {
        const std::size_t n = g.n, nn = n * n;
        pcn::vec delta(nn, 0.0), t, cg, re, im;
        delta[0] = 1.0;
        g.adjoint(delta, t);
        g.field(t, cg);  // Cov(g(0), g(x)) = (G G^T)[x][0]
        sigma = std::sqrt(cg[0]);
        pcn::vec cs(nn);
        for (std::size_t i = 0; i < nn; ++i) cs[i] = 2.0 / M_PI * std::asin(std::clamp(cg[i] / cg[0], -1.0, 1.0));
        g.dft(cs, pcn::vec(nn, 0.0), mu, im, -1.0);
        for (double e : mu)
            if (!(e > 0)) throw std::runtime_error("the phases' covariance is not positive definite");
        // D along each wave's own direction: 1 - (2 / pi) / sigma^2 (G v)^T Cov(s)^-1 (G v)
        auto wave_dir = [&](std::vector<std::pair<std::size_t, double>> v) {
            pcn::vec th(2 * nn, 0.0), gv;
            for (const auto &[i, w] : v) th[i] = w;
            g.field(th, gv);
            double norm = 0;
            for (double e : gv) norm += e * e;
            if (norm < 1e-24) return;  // a direction g does not see
            const pcn::vec ci = cov_inverse(gv);
            double q = 0;
            for (std::size_t i = 0; i < nn; ++i) q += gv[i] * ci[i];
            dirs.push_back({std::move(v), std::max(1.0 - 2.0 / M_PI / (sigma * sigma) * q, 1e-3)});
        };
        for (std::size_t ky = 0; ky < n; ++ky)
            for (std::size_t kx = 0; kx < n; ++kx) {
                const std::size_t k = ky * n + kx, p = ((n - ky) % n) * n + (n - kx) % n;
                if (p < k) continue;
                if (p == k) {
                    wave_dir({{k, 1.0}});
                    wave_dir({{nn + k, 1.0}});
                } else {
                    const double r = 1.0 / std::sqrt(2.0);
                    wave_dir({{k, r}, {p, r}});            // cos waves add
                    wave_dir({{nn + k, r}, {nn + p, -r}});  // sin waves flip sign with k
                }
            }
    }
    // Cov(s)^-1 v by a DFT, a division by the eigenvalues, the inverse DFT
    pcn::vec cov_inverse(const pcn::vec &v) const {
        const std::size_t nn = g.n * g.n;
        pcn::vec re, im, ore, oim;
        g.dft(v, pcn::vec(nn, 0.0), re, im, -1.0);
        for (std::size_t k = 0; k < nn; ++k) re[k] /= mu[k] * double(nn), im[k] /= mu[k] * double(nn);
        g.dft(re, im, ore, oim, 1.0);
        return ore;
    }
    pcn::vec estimate(const pcn::vec &signs) const {
        pcn::vec t;
        g.adjoint(cov_inverse(signs), t);
        for (double &e : t) e *= std::sqrt(2.0 / M_PI) / sigma;
        return t;
    }
    // the reference from answers (a fields, phases split at `threshold`)
    pcn::gaussian reference(const std::vector<pcn::vec> &answers, double threshold) const {
        pcn::gaussian r;
        std::vector<pcn::vec> est;
        for (const pcn::vec &a : answers) {
            pcn::vec s(a.size());
            for (std::size_t i = 0; i < a.size(); ++i) s[i] = a[i] >= threshold ? 1.0 : -1.0;
            est.push_back(estimate(s));
        }
        pcn::vec sd;
        pcn::moments(est, r.m, sd);
        const double scale = 1.0 / std::sqrt(double(est.size()) - 1.0);
        for (const pcn::vec &e : est) {
            pcn::vec c(e.size());
            for (std::size_t i = 0; i < e.size(); ++i) c[i] = (e[i] - r.m[i]) * scale;
            r.u.push_back(std::move(c));
        }
        r.dirs = dirs;
        r.prepare();
        return r;
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
    double rhat_max = 0, rhat_over = 0, ess = 0, acceptance = 0, beta = 0, seconds = 0;
    double solves = 0;             // forward solves, all chains
    double halves_disagree = 0;    // the phases of the first half of the chains' mean against the second's
    double to_typical = 0;         // steps until the misfit first reaches the kept states' median, mean over chains
};

// The phase of two means of a disagree at this share of points.
double disagreement(const pcn::vec &x, const pcn::vec &y, double threshold) {
    double d = 0;
    for (std::size_t i = 0; i < x.size(); ++i) d += ((x[i] >= threshold) != (y[i] >= threshold)) / double(x.size());
    return d;
}

// The chains run side by side on `threads` threads (each chain its own solver state), from prior
// draws or from `starts`, by pCN or about the Gaussian `about`.
reference mcmc(const prior &pr, const darcy::grid &g, const darcy::field &b, const data &m, std::size_t chains,
               const pcn::settings &s, const pcn::ladder &lad, std::uint64_t seed, std::size_t threads,
               const pcn::gaussian *about = nullptr, const std::vector<pcn::vec> *starts = nullptr) {
    const std::size_t plane = g.n * g.n;
    std::vector<pcn::chain> cs(chains);
    std::vector<double> solves(chains, 0.0);
    std::mutex report;  // a tempered chain's lines printed together
    auto one_chain = [&](std::size_t c) {
        // one negative log-likelihood per replica, each with its own solver state
        auto make_phi = [&]() -> std::function<double(const pcn::vec &)> {
            auto u = std::make_shared<darcy::field>(plane, 0.0);
            auto last_a = std::make_shared<darcy::field>();  // a small step often leaves every phase as it was
            auto last_phi = std::make_shared<double>(INFINITY);
            return [&, c, u, last_a, last_phi](const pcn::vec &theta) -> double {
                darcy::field a = pr.a(theta);
                if (a == *last_a) return *last_phi;
                darcy::cholesky_solve(g, a, b, *u);
                ++solves[c];
                double e = 0;
                for (std::size_t k = 0; k < m.where.size(); ++k) e += std::pow((*u)[m.where[k]] - m.d[k], 2);
                *last_a = std::move(a);
                return *last_phi = e / (2 * m.sigma * m.sigma);
            };
        };
        auto keep = [&](const pcn::vec &theta) { return pr.a(theta); };
        std::mt19937_64 rng(seed * 1000 + c);
        std::normal_distribution<double> normal;
        std::vector<pcn::vec> theta0;
        for (std::size_t k = 0; k < std::max<std::size_t>(lad.replicas, 1); ++k) {
            pcn::vec t(pr.g.dim());
            for (double &e : t) e = normal(rng);
            if (starts) t = (*starts)[(c + k * chains) % starts->size()];
            theta0.push_back(std::move(t));
        }
        if (lad.replicas > 1) {
            const pcn::tempered t = pcn::run_tempered(theta0, make_phi, keep, s, lad, seed * 1000 + c + 500, about);
            std::lock_guard<std::mutex> lock(report);
            std::fprintf(stderr, "  %s tempered chain %zu: acceptance %.3f, beta %.4f, swap rates %.2f to %.2f, "
                         "T up to %.0f, round trips %.1f, %.1f s\n", about ? "guided" : "pCN", c, t.acceptance, t.beta,
                         *std::min_element(t.swap_rate.begin(), t.swap_rate.end()),
                         *std::max_element(t.swap_rate.begin(), t.swap_rate.end()), t.temperatures.back(),
                         t.round_trips, t.seconds);
            if (std::getenv("PIDDM_POSTERIOR_LADDER"))
                for (std::size_t k = 0; k < t.temperatures.size(); ++k)
                    std::fprintf(stderr, "    T %.4g beta %.4f swap %.2f\n", t.temperatures[k], t.betas[k],
                                 k < t.swap_rate.size() ? t.swap_rate[k] : 0.0);
            cs[c] = t;
            return;
        }
        cs[c] = pcn::run(theta0[0], make_phi(), keep, s, seed * 1000 + c + 500, about);
        std::fprintf(stderr, "  %s chain %zu: acceptance %.3f, beta %.4f, %.1f s\n", about ? "guided" : "pCN", c,
                     cs[c].acceptance, cs[c].beta, cs[c].seconds);
    };
    std::atomic<std::size_t> next{0};
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < std::min(threads, chains); ++t)
        pool.emplace_back([&] {
            for (std::size_t c; (c = next++) < chains;) one_chain(c);
        });
    for (std::thread &t : pool) t.join();
    reference r;
    std::vector<pcn::vec> first, second;
    for (std::size_t k = 0; k < chains; ++k) {
        const pcn::chain &c = cs[k];
        r.draws.insert(r.draws.end(), c.kept.begin(), c.kept.end());
        (2 * k < chains ? first : second).insert((2 * k < chains ? first : second).end(), c.kept.begin(), c.kept.end());
        r.acceptance += c.acceptance / double(chains);
        r.beta += c.beta / double(chains);
        r.seconds += c.seconds;
        r.solves += solves[k];
    }
    pcn::moments(r.draws, r.mean, r.sd);
    {
        pcn::vec all;
        for (const pcn::chain &c : cs) all.insert(all.end(), c.trace.begin(), c.trace.end());
        const double typical = darcy::median(all);
        for (const pcn::chain &c : cs) {
            const std::size_t at = std::size_t(
                std::find_if(c.path.begin(), c.path.end(), [&](double f) { return f <= typical; }) - c.path.begin());
            r.to_typical += double(at * s.thin) / double(chains);
        }
    }
    {
        pcn::vec m1, m2, sd;
        pcn::moments(first, m1, sd);
        pcn::moments(second, m2, sd);
        r.halves_disagree = disagreement(m1, m2, 0.5 * (pr.a_lo + pr.a_hi));
    }
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

// The median over problems of x / y.
double ratio_median(const std::vector<double> &x, const std::vector<double> &y) {
    std::vector<double> r;
    for (std::size_t i = 0; i < x.size(); ++i) r.push_back(x[i] / y[i]);
    return darcy::median(r);
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
    // the chains' mean and covariance against the closed form, and their agreement
    auto verify = [&](const char *name, const pcn::gaussian *about) {
        std::vector<pcn::chain> cs;
        for (std::uint64_t c = 0; c < 4; ++c)
            cs.push_back(pcn::run(pcn::vec(d, c % 2 ? 2.0 : -2.0), phi, [](const pcn::vec &t) { return t; }, st, 7 + c,
                                  about));
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
        std::printf("linear-Gaussian %s: |mean - mu| <= %.4f, |cov - Sigma| <= %.4f, R-hat <= %.4f, ESS %.0f, "
                    "acceptance %.3f, beta %.3f\n",
                    name, worst_mean, worst_cov, worst_rhat, ess, cs[0].acceptance, cs[0].beta);
        return std::make_tuple(worst_mean < 0.03 && worst_cov < 0.03 && worst_rhat < 1.01 && ess > 1000,
                               cs[0].acceptance, ess);
    };
    const auto [pcn_ok, pcn_acc, pcn_ess] = verify("pCN", nullptr);
    // about a reference: Sigma = delta I + L L^T (L the Cholesky factor of Sigma - delta I), exact and
    // then deliberately wrong (mean shifted by 0.5, covariance doubled): the target must not move
    const double delta = 0.01;
    auto reference = [&](double shift, double scale) {
        pcn::gaussian g;
        g.m.assign(mu, mu + d);
        for (double &e : g.m) e += shift;
        for (std::size_t i = 0; i < d; ++i) g.dirs.push_back({{{i, 1.0}}, scale * delta});
        double L[d][d] = {};
        for (std::size_t i = 0; i < d; ++i)
            for (std::size_t j = 0; j <= i; ++j) {
                double v = P[i][d + j] - (i == j ? delta : 0.0);
                for (std::size_t q = 0; q < j; ++q) v -= L[i][q] * L[j][q];
                L[i][j] = i == j ? std::sqrt(v) : v / L[j][j];
            }
        for (std::size_t j = 0; j < d; ++j) {
            pcn::vec col(d);
            for (std::size_t i = 0; i < d; ++i) col[i] = std::sqrt(scale) * L[i][j];
            g.u.push_back(col);
        }
        g.prepare();
        return g;
    };
    const pcn::gaussian exact = reference(0.0, 1.0), wrong = reference(0.5, 2.0);
    const auto [exact_ok, exact_acc, exact_ess] = verify("about the posterior", &exact);
    const auto [wrong_ok, wrong_acc, wrong_ess] = verify("about a wrong Gaussian", &wrong);
    // about the posterior itself every proposal is accepted and the draws are independent
    const bool ok = pcn_ok && exact_ok && wrong_ok && exact_acc > 0.999 && exact_ess > 2 * pcn_ess;
    (void)pcn_acc, (void)wrong_acc, (void)wrong_ess;
    std::printf("%s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}

// Tempering on a posterior with two modes known in closed form: prior N(0, I) in 2-D, likelihood an
// equal mixture of two narrow Gaussians, so the posterior is a mixture with means mu_j / (1 + s^2),
// variances s^2 / (1 + s^2) and weights proportional to exp(-|mu_j|^2 / (2 (1 + s^2))). pCN chains
// started in either mode stay there (their R-hat says so); tempered chains must find both modes'
// weights.
int check_tempering() {
    const double s = 0.05, mu[2][2] = {{1.0, 0.5}, {-1.5, -1.0}};
    auto phi = [&](const pcn::vec &t) {
        double l[2];
        for (int j = 0; j < 2; ++j)
            l[j] = -((t[0] - mu[j][0]) * (t[0] - mu[j][0]) + (t[1] - mu[j][1]) * (t[1] - mu[j][1])) / (2 * s * s);
        const double top = std::max(l[0], l[1]);
        return -(top + std::log(std::exp(l[0] - top) + std::exp(l[1] - top)));
    };
    const double e0 = -(mu[0][0] * mu[0][0] + mu[0][1] * mu[0][1]) / (2 * (1 + s * s));
    const double e1 = -(mu[1][0] * mu[1][0] + mu[1][1] * mu[1][1]) / (2 * (1 + s * s));
    const double w0 = 1.0 / (1.0 + std::exp(e1 - e0));
    pcn::vec mean_true(2);
    for (int i = 0; i < 2; ++i) mean_true[i] = (w0 * mu[0][i] + (1 - w0) * mu[1][i]) / (1 + s * s);
    pcn::settings st;
    st.steps = 40000, st.burn_in = 10000, st.thin = 5, st.beta = 0.3;
    const pcn::ladder lad{10, 2000.0};
    auto keep = [](const pcn::vec &t) { return t; };
    // 1 where a state is nearer the first mode's mean mu_0 / (1 + s^2) than the second's
    auto dist2 = [&](const pcn::vec &t, int j) {
        const double x = t[0] - mu[j][0] / (1 + s * s), y = t[1] - mu[j][1] / (1 + s * s);
        return x * x + y * y;
    };
    auto first_mode = [&](const pcn::vec &t) { return double(dist2(t, 0) < dist2(t, 1)); };
    auto summarise = [&](const char *name, const std::vector<pcn::chain> &cs) {
        std::vector<pcn::vec> series;
        double weight = 0, worst_chain = 0, n = 0;
        pcn::vec mean(2, 0.0);
        for (const pcn::chain &c : cs) {
            pcn::vec x;
            double wc = 0;
            for (const pcn::vec &t : c.kept) {
                x.push_back(first_mode(t)), wc += first_mode(t) / double(c.kept.size());
                mean[0] += t[0], mean[1] += t[1], n += 1;
            }
            weight += wc / double(cs.size());
            worst_chain = std::max(worst_chain, std::abs(wc - w0));
            series.push_back(std::move(x));
        }
        const double rhat = pcn::split_rhat(series);
        const double mean_err = std::max(std::abs(mean[0] / n - mean_true[0]), std::abs(mean[1] / n - mean_true[1]));
        std::printf("two modes, %s: first mode's weight %.3f (closed form %.3f; worst chain off by %.3f), mean off by "
                    "%.3f, R-hat of the mode %.3f\n",
                    name, weight, w0, worst_chain, mean_err, rhat);
        return std::make_tuple(std::abs(weight - w0), worst_chain, mean_err, rhat);
    };
    std::vector<pcn::chain> plain, hot;
    for (std::uint64_t c = 0; c < 4; ++c) {
        const pcn::vec start = c % 2 ? pcn::vec{mu[1][0], mu[1][1]} : pcn::vec{mu[0][0], mu[0][1]};
        plain.push_back(pcn::run(start, phi, keep, st, 101 + c));
        const pcn::tempered t = pcn::run_tempered(
            {start}, [&] { return std::function<double(const pcn::vec &)>(phi); }, keep, st, lad, 201 + c);
        if (c == 0) {
            std::printf("tempered ladder:");
            for (double e : t.temperatures) std::printf(" %.3g", e);
            std::printf("; swap rates:");
            for (double e : t.swap_rate) std::printf(" %.2f", e);
            std::printf("; round trips %.1f\n", t.round_trips);
        }
        hot.push_back(t);
    }
    const auto [p_err, p_worst, p_mean, p_rhat] = summarise("pCN", plain);
    const auto [t_err, t_worst, t_mean, t_rhat] = summarise("tempered pCN", hot);
    (void)p_err, (void)p_worst, (void)p_mean;
    // the problem must defeat plain pCN (else it tests nothing) and tempering must solve it
    const bool ok = p_rhat > 1.5 && t_err < 0.03 && t_worst < 0.08 && t_mean < 0.08 && t_rhat < 1.05;
    std::printf("%s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}

// The coefficients' estimate from phases, checked independently: G^T against G by the adjoint
// identity, the DFT's round trip, and the closed-form error variances against Monte Carlo over prior
// draws (theta, sign(G theta)).
int check_sign_inverse() {
    const std::size_t n = 32, nn = n * n;
    const grf g(n, 2.0, 3.0);
    std::mt19937_64 rng(11);
    std::normal_distribution<double> normal;
    pcn::vec theta(2 * nn), v(nn), gt, gv;
    for (double &e : theta) e = normal(rng);
    for (double &e : v) e = normal(rng);
    g.field(theta, gt);
    g.adjoint(v, gv);
    double lhs = 0, rhs = 0;
    for (std::size_t i = 0; i < nn; ++i) lhs += gt[i] * v[i];
    for (std::size_t i = 0; i < 2 * nn; ++i) rhs += theta[i] * gv[i];
    const double adjoint_err = std::abs(lhs - rhs) / std::abs(lhs);
    pcn::vec re, im, bre, bim;
    g.dft(v, pcn::vec(nn, 0.0), re, im, -1.0);
    g.dft(re, im, bre, bim, 1.0);
    double dft_err = 0;
    for (std::size_t i = 0; i < nn; ++i) dft_err = std::max(dft_err, std::abs(bre[i] / double(nn) - v[i]));
    const sign_inverse si(g);
    // Monte Carlo: the error of the estimate along each informed direction, and the phases it keeps
    const std::size_t draws = 2000;
    pcn::vec err2(si.dirs.size(), 0.0);
    double agree = 0;
    for (std::size_t t = 0; t < draws; ++t) {
        for (double &e : theta) e = normal(rng);
        g.field(theta, gt);
        pcn::vec sg(nn);
        for (std::size_t i = 0; i < nn; ++i) sg[i] = gt[i] >= 0 ? 1.0 : -1.0;
        const pcn::vec est = si.estimate(sg);
        pcn::vec ge;
        g.field(est, ge);
        for (std::size_t i = 0; i < nn; ++i) agree += ((ge[i] >= 0) == (sg[i] > 0)) / double(nn * draws);
        for (std::size_t b = 0; b < si.dirs.size(); ++b) {
            double dot = 0;
            for (const auto &[i, w] : si.dirs[b].v) dot += w * (theta[i] - est[i]);
            err2[b] += dot * dot / double(draws);
        }
    }
    double worst = 0, informed = 0;
    for (std::size_t b = 0; b < si.dirs.size(); ++b)
        if (si.dirs[b].var < 0.9) {
            ++informed;
            worst = std::max(worst, std::abs(err2[b] - si.dirs[b].var));
        }
    std::printf("sign inverse: adjoint identity %.1e, DFT round trip %.1e; %zu directions, %.0f informed (error "
                "variance < 0.9), their error variance within %.3f of Monte Carlo (%zu draws); estimate's phases "
                "agree with the draws' at %.3f of points\n",
                adjoint_err, dft_err, si.dirs.size(), informed, worst, draws, agree);
    // Monte Carlo's own standard error of a variance near 1 from 2000 draws is about 0.03
    const bool ok = adjoint_err < 1e-12 && dft_err < 1e-10 && informed > 10 && worst < 0.15 && agree > 0.8;
    std::printf("%s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) try {
    if (argc == 2 && std::string(argv[1]) == "--check-linear-gaussian") return check_linear_gaussian();
    if (argc == 2 && std::string(argv[1]) == "--check-sign-inverse") return check_sign_inverse();
    if (argc == 2 && std::string(argv[1]) == "--check-tempering") return check_tempering();
    if (argc < 4) {
        std::fprintf(stderr,
                     "usage: %s MODEL.onnx PROBLEMS.f32 OUT_DIR [COUNT] [SENSORS] [NOISE] [CHAINS] [STEPS] [ANSWERS] "
                     "[NOISE_SCALE] [REPLICAS] [HOTTEST]\n       %s --check-linear-gaussian | --check-sign-inverse | "
                     "--check-tempering\n",
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
    const double noise_scale = argc > 10 ? std::stod(argv[10]) : 1.0;
    pcn::ladder lad;
    lad.replicas = argc > 11 ? std::stoul(argv[11]) : 1;
    lad.hottest = argc > 12 ? std::stod(argv[12]) : 1e4;
    const char *threads_env = std::getenv("PIDDM_POSTERIOR_THREADS");
    const std::size_t threads =
        threads_env ? std::stoul(threads_env) : std::max(1u, std::thread::hardware_concurrency());
    const std::size_t plane = pf.plane(), field = 2 * plane;
    if (count < 1 || count > pf.count || sensors < 1 || sensors > (pf.nx - 2) * (pf.ny - 2) || !(noise > 0) ||
        chains < 2 || steps < 100 || answers < 2 || count * answers > PIDDM_MAX_BATCH || !(noise_scale >= 0) ||
        lad.replicas < 1 || lad.replicas > 256 || !(lad.hottest > 1))
        throw std::invalid_argument("COUNT outside [1, problems], SENSORS outside [1, interior points], NOISE <= 0, "
                                    "CHAINS < 2, STEPS < 100, ANSWERS < 2, COUNT x ANSWERS over PIDDM_MAX_BATCH or "
                                    "NOISE_SCALE < 0, REPLICAS outside [1, 256] or HOTTEST <= 1");
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
    constexpr std::size_t columns = 34;
    const char *names[columns] = {"error_rate_mcmc_mean",  "error_rate_surrogate_mean", "disagreement_surrogate_mcmc",
                             "coverage_mcmc",         "coverage_surrogate",        "crps_mcmc",
                             "crps_surrogate",        "sd_mcmc",                   "sd_surrogate",
                             "sd_ratio",              "rhat_max",                  "rhat_points_over_1.1",
                             "ess",                   "acceptance",                "mcmc_seconds_per_chain",
                             "ess_per_second",        "beta",                      "solves_per_chain",
                             "ess_per_solve",         "disagreement_mcmc_halves",  "error_rate_guided_mean",
                             "coverage_guided",       "crps_guided",               "sd_guided",
                             "rhat_points_over_1.1_guided", "ess_guided",          "acceptance_guided",
                             "beta_guided",           "guided_seconds_per_chain",  "ess_per_second_guided",
                             "ess_per_solve_guided",  "disagreement_guided_mcmc",  "steps_to_typical",
                             "steps_to_typical_guided"};
    // a column's place by its name, so the reference path writes the surrogate's columns by name
    auto at = [&](const char *name) {
        const auto same = [&](const char *c) { return std::strcmp(c, name) == 0; };
        const std::size_t k = std::size_t(std::find_if(names, names + columns, same) - names);
        if (k == columns) throw std::logic_error(std::string("no column ") + name);
        return k;
    };
    std::vector<double> col[columns];
    const sign_inverse si(pr.g);
    // One record per problem (OUT_DIR/problem_P.txt and .f32), written when its chains finish: a run
    // that stops keeps its finished problems, and the same command resumes with the next one.
    // the model by its weights, not by how its path is spelled
    const std::string settings_line = card_string(card, "weights_sha256") + " " + std::to_string(sensors) + " " + std::to_string(noise) + " " +
                                      std::to_string(chains) + " " + std::to_string(steps) + " " +
                                      std::to_string(answers) + " " + std::to_string(noise_scale) + " " +
                                      std::to_string(lad.replicas) + " " + std::to_string(lad.hottest);
    // problem p's record in `dir`: its settings line, its columns, its fields; false where any is
    // missing, cut short or not of this grid
    auto read_record = [&](const std::string &dir, std::size_t p, std::string &line, double *values,
                           darcy::fields &f) {
        const std::string stem = dir + "/problem_" + std::to_string(p);
        std::ifstream in(stem + ".txt");
        if (!in || !std::getline(in, line)) return false;
        for (std::size_t k = 0; k < columns; ++k) {
            std::string word;  // std::stod, not >>, reads the inf and nan a record may hold
            if (!(in >> word)) return false;
            try {
                values[k] = std::stod(word);
            } catch (const std::exception &) {
                return false;
            }
        }
        try {
            f = darcy::read_fields(stem + ".f32");
        } catch (const std::exception &) {
            return false;
        }
        return f.count == 1 && f.channels == 6 && f.plane() == plane;
    };
    auto resume = [&](std::size_t p, double *values) {
        std::string line;
        darcy::fields f;
        if (!read_record(out_dir, p, line, values, f) || line != settings_line) return false;
        std::copy(f.data.begin(), f.data.end(), outf.at(p, 0));
        return true;
    };
    // PIDDM_POSTERIOR_REFERENCE=DIR: the chains' columns and fields read from DIR, the records of a
    // run with these settings and another model (its MCMC is the model's to compare against, not
    // its to run again); only the surrogate is scored anew, the guided sampler is not run (NaN).
    const char *reference_env = std::getenv("PIDDM_POSTERIOR_REFERENCE");
    const std::string reference_dir = reference_env ? reference_env : "";
    auto reference_of = [&](std::size_t p, double *values, reference &ref) {
        const std::string stem = reference_dir + "/problem_" + std::to_string(p);
        // the chains' settings must agree (sensors, noise, chains, steps, replicas, hottest); the
        // model, ANSWERS and NOISE_SCALE are the surrogate's own
        auto chains_of = [](const std::string &l) {
            std::istringstream words(l);
            std::vector<std::string> w{std::istream_iterator<std::string>(words), {}};
            return w.size() == 9 ? std::vector<std::string>{w[1], w[2], w[3], w[4], w[7], w[8]}
                                 : std::vector<std::string>{};
        };
        std::string line;
        darcy::fields f;
        if (!read_record(reference_dir, p, line, values, f))
            throw std::runtime_error(stem + ".txt or .f32 is missing, cut short or not of this grid");
        if (chains_of(line).empty() || chains_of(line) != chains_of(settings_line))
            throw std::runtime_error(stem + ".txt is not a record of these settings (sensors, noise, chains, steps, "
                                     "replicas, hottest)");
        const float *truth = pf.at(p, 0);
        if (!std::equal(truth, truth + plane, f.at(0, 0)))
            throw std::runtime_error(stem + ".f32 is a record of another problem");
        ref.mean.assign(f.at(0, 2), f.at(0, 2) + plane);
        ref.sd.assign(f.at(0, 3), f.at(0, 3) + plane);
    };
    // problem p's fields of OUT_DIR/posterior.f32: true a, sensors, MCMC mean and std, the surrogate's
    auto keep_fields = [&](std::size_t p, const reference &ref, const pcn::vec &mean, const pcn::vec &sd) {
        std::copy_n(pf.at(p, 0), plane, outf.at(p, 0));
        for (std::size_t w : ms[p].where) outf.at(p, 1)[w] = 1.0f;
        for (std::size_t i = 0; i < plane; ++i) {
            outf.at(p, 2)[i] = float(ref.mean[i]), outf.at(p, 3)[i] = float(ref.sd[i]);
            outf.at(p, 4)[i] = float(mean[i]), outf.at(p, 5)[i] = float(sd[i]);
        }
    };
    for (std::size_t p = 0; p < count; ++p) {
        double values[columns];
        if (reference_dir.empty() && resume(p, values)) {
            std::fprintf(stderr, "problem %zu of %zu: resumed from %s/problem_%zu.txt\n", p + 1, count,
                         out_dir.c_str(), p);
            for (std::size_t k = 0; k < columns; ++k) col[k].push_back(values[k]);
            continue;
        }
        const darcy::field b = darcy::rhs(g, pf.at(p, 2));
        reference ref;
        if (reference_dir.empty()) {
            std::fprintf(stderr, "problem %zu of %zu: %zu chains of %zu pCN steps\n", p + 1, count, chains, steps);
            ref = mcmc(pr, g, b, ms[p], chains, st, lad, 17 + p, threads);
            // the mean and std as the record keeps them (float): a later run scored against the record
            // compares the same numbers (short chains leave points at exactly half each phase, where
            // the last bit decides the phase)
            for (std::size_t i = 0; i < plane; ++i) ref.mean[i] = float(ref.mean[i]), ref.sd[i] = float(ref.sd[i]);
        } else {
            reference_of(p, values, ref);
        }
        std::vector<pcn::vec> draws;
        for (std::size_t k = 0; k < answers; ++k) {
            const float *a = &sur.fields[(p * answers + k) * field];
            draws.emplace_back(a, a + plane);
        }
        pcn::vec mean, sd;
        pcn::moments(draws, mean, sd);
        const float *truth = pf.at(p, 0);
        const scores ss = score(draws, mean, sd, truth, threshold);
        const double disagree = disagreement(mean, ref.mean, threshold);
        if (!reference_dir.empty()) {
            values[at("error_rate_surrogate_mean")] = ss.error_rate;
            values[at("disagreement_surrogate_mcmc")] = disagree;
            values[at("coverage_surrogate")] = ss.coverage, values[at("crps_surrogate")] = ss.crps;
            values[at("sd_surrogate")] = ss.mean_sd, values[at("sd_ratio")] = ss.mean_sd / values[at("sd_mcmc")];
            for (std::size_t k = 0; k < columns; ++k)
                if (std::strstr(names[k], "guided")) values[k] = std::nan("");
            for (std::size_t k = 0; k < columns; ++k) col[k].push_back(values[k]);
            std::fprintf(stderr, "problem %zu of %zu: surrogate error rate %.4f (the reference's chains %.4f)\n",
                         p + 1, count, values[at("error_rate_surrogate_mean")], values[at("error_rate_mcmc_mean")]);
            keep_fields(p, ref, mean, sd);
            continue;
        }
        // the exact posterior again, the chains moving about the answers' Gaussian and started from its draws
        const auto tg = std::chrono::steady_clock::now();
        const pcn::gaussian about = si.reference(draws, threshold);
        std::vector<pcn::vec> starts;
        std::mt19937_64 start_rng(29 + p);
        for (std::size_t c = 0; c < chains * lad.replicas; ++c) {
            pcn::vec t = about.draw(start_rng);
            for (std::size_t i = 0; i < t.size(); ++i) t[i] += about.m[i];
            starts.push_back(std::move(t));
        }
        const double t_fit = std::chrono::duration<double>(std::chrono::steady_clock::now() - tg).count();
        const reference gd = mcmc(pr, g, b, ms[p], chains, st, lad, 17 + p, threads, &about, &starts);
        const double gd_seconds = gd.seconds + t_fit + t_sur;  // the answers and the fit counted once
        const scores sm = score(ref.draws, ref.mean, ref.sd, truth, threshold);
        const double disagree_guided = disagreement(gd.mean, ref.mean, threshold);
        const scores sg = score(gd.draws, gd.mean, gd.sd, truth, threshold);
        const double computed[columns] = {sm.error_rate, ss.error_rate, disagree,   sm.coverage,    ss.coverage,
                                        sm.crps,       ss.crps,       sm.mean_sd, ss.mean_sd,     ss.mean_sd / sm.mean_sd,
                                        ref.rhat_max,  ref.rhat_over, ref.ess,    ref.acceptance, ref.seconds / double(chains),
                                        ref.ess / ref.seconds,
                                        ref.beta, ref.solves / double(chains), ref.ess / ref.solves, ref.halves_disagree,
                                        sg.error_rate, sg.coverage, sg.crps, sg.mean_sd,
                                        gd.rhat_over, gd.ess, gd.acceptance, gd.beta,
                                        gd_seconds / double(chains), gd.ess / gd_seconds, gd.ess / gd.solves,
                                        disagree_guided, ref.to_typical, gd.to_typical};
        std::copy(computed, computed + columns, values);
        for (std::size_t k = 0; k < columns; ++k) col[k].push_back(values[k]);
        std::fprintf(stderr,
                     "  ESS per second: pCN %.3f, guided %.3f; per solve: %.2e, %.2e; points over R-hat 1.1: %.2f, "
                     "%.2f; mean phases disagree on %.3f (pCN's halves: %.3f, guided's: %.3f); steps to the typical "
                     "misfit %.0f, %.0f\n",
                     ref.ess / ref.seconds, gd.ess / gd_seconds, ref.ess / ref.solves, gd.ess / gd.solves, ref.rhat_over,
                     gd.rhat_over, disagree_guided, ref.halves_disagree,
                     gd.halves_disagree, ref.to_typical, gd.to_typical);
        keep_fields(p, ref, mean, sd);
        {
            darcy::fields one;
            one.count = 1, one.channels = 6, one.ny = pf.ny, one.nx = pf.nx;
            one.data.assign(outf.at(p, 0), outf.at(p, 0) + 6 * plane);
            const std::string stem = out_dir + "/problem_" + std::to_string(p);
            darcy::write_fields(stem + ".f32", one);
            {
                std::ofstream rec(stem + ".txt.part");
                rec.precision(17);
                rec << settings_line << "\n";
                for (std::size_t q = 0; q < columns; ++q) rec << values[q] << "\n";
                if (!rec) throw std::runtime_error("cannot write the record of problem " + std::to_string(p));
            }
            // renamed whole, so a run stopped while writing leaves no half record to resume from
            if (std::rename((stem + ".txt.part").c_str(), (stem + ".txt").c_str()) != 0)
                throw std::runtime_error("cannot write the record of problem " + std::to_string(p));
        }
    }
    std::ofstream txt(out_dir + "/posterior.txt");
    if (!txt) throw std::runtime_error("cannot write " + out_dir + "/posterior.txt");
    for (std::size_t p = 0; p < count; ++p)
        txt << "problem_" << p << "_error_rate_mcmc = " << col[0][p] << "\nproblem_" << p
            << "_error_rate_surrogate = " << col[1][p] << "\nproblem_" << p << "_coverage_mcmc = " << col[3][p]
            << "\nproblem_" << p << "_coverage_surrogate = " << col[4][p] << "\nproblem_" << p
            << "_rhat_max = " << col[10][p] << "\nproblem_" << p << "_ess = " << col[12][p] << "\n";
    txt << "problems = " << count << "\nsensors = " << sensors << "\nnoise = " << noise << "\nchains = " << chains
        << "\nsteps = " << steps << "\nanswers = " << answers << "\nnoise_scale = " << noise_scale
        << "\nsurrogate_seconds_per_problem = " << t_sur << "\n";
    // means over the problems, and medians
    for (std::size_t k = 0; k < columns; ++k) {
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
    std::printf("the exact posterior about the surrogate's answers: effective samples per second %.3f against pCN's "
                "%.3f (median %.1fx), per solve %.2e against %.2e; points over R-hat 1.1 %.2f against %.2f\n",
                darcy::median(col[29]), darcy::median(col[15]), ratio_median(col[29], col[15]), darcy::median(col[30]),
                darcy::median(col[18]), darcy::median(col[24]), darcy::median(col[11]));
    return 0;
} catch (const std::exception &e) {
    std::fprintf(stderr, "darcy_posterior: %s\n", e.what());
    return 1;
}
