// The warm-start study through PETSc: the Darcy matrix assembled as AIJ, KSPCG with PCJACOBI,
// solved from zero and from the surrogate's u (KSPSetInitialGuessNonzero).
//
//   darcy_warm_start_petsc MODEL.onnx PROBLEMS.f32 OUT_DIR [COUNT] [STEPS] [LAMBDA_INFER]
//
// Stops at ||b - A x|| <= rtol ||b|| (unpreconditioned norm) for rtol 1e-4, 1e-6, 1e-8; prints median
// iterations and seconds (inference included) and writes OUT_DIR/warm_start_petsc.txt.
#include "surrogate.hpp"

#include <petscksp.h>

#include <chrono>
#include <cstdio>
#include <fstream>

#define PCHECK(call)                                                                   \
    do {                                                                               \
        PetscErrorCode ierr_ = (call);                                                 \
        if (ierr_) throw std::runtime_error(std::string("PETSc call failed: ") + #call); \
    } while (0)

namespace {

// The interior unknowns, numbered row by row.
Mat assemble(const darcy::grid &g, const darcy::field &a) {
    const PetscInt m = PetscInt(g.n - 2), N = m * m;
    Mat A;
    PCHECK(MatCreateSeqAIJ(PETSC_COMM_SELF, N, N, 5, nullptr, &A));
    g.interior([&](std::size_t p) {
        const PetscInt i = PetscInt(p % g.n) - 1, j = PetscInt(p / g.n) - 1, r = j * m + i;
        const darcy::row s = darcy::stencil(g, a, p);
        PetscInt cols[5];
        PetscScalar vals[5];
        PetscInt k = 0;
        cols[k] = r, vals[k++] = s.c;
        if (i + 1 < m) cols[k] = r + 1, vals[k++] = s.e;
        if (i > 0) cols[k] = r - 1, vals[k++] = s.w;
        if (j + 1 < m) cols[k] = r + m, vals[k++] = s.n;
        if (j > 0) cols[k] = r - m, vals[k++] = s.s;
        PCHECK(MatSetValues(A, 1, &r, k, cols, vals, INSERT_VALUES));
    });
    PCHECK(MatAssemblyBegin(A, MAT_FINAL_ASSEMBLY));
    PCHECK(MatAssemblyEnd(A, MAT_FINAL_ASSEMBLY));
    return A;
}

Vec interior_vec(const darcy::grid &g, const darcy::field &x) {
    const PetscInt m = PetscInt(g.n - 2);
    Vec v;
    PCHECK(VecCreateSeq(PETSC_COMM_SELF, m * m, &v));
    PetscScalar *p;
    PCHECK(VecGetArray(v, &p));
    g.interior([&](std::size_t q) { p[(PetscInt(q / g.n) - 1) * m + PetscInt(q % g.n) - 1] = x[q]; });
    PCHECK(VecRestoreArray(v, &p));
    return v;
}

// Iterations and seconds of KSPCG + Jacobi to rtol from x0 (nullptr: zero).
std::pair<int, double> ksp_solve(Mat A, Vec b, Vec x0, double rtol) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    KSP ksp;
    PC pc;
    Vec x;
    PCHECK(VecDuplicate(b, &x));
    if (x0) {
        PCHECK(VecCopy(x0, x));
    } else {
        PCHECK(VecSet(x, 0.0));
    }
    PCHECK(KSPCreate(PETSC_COMM_SELF, &ksp));
    PCHECK(KSPSetOperators(ksp, A, A));
    PCHECK(KSPSetType(ksp, KSPCG));
    PCHECK(KSPGetPC(ksp, &pc));
    PCHECK(PCSetType(pc, PCJACOBI));
    PCHECK(KSPSetNormType(ksp, KSP_NORM_UNPRECONDITIONED));
    PCHECK(KSPSetTolerances(ksp, rtol, 0.0, PETSC_DEFAULT, 5000));
    PCHECK(KSPSetInitialGuessNonzero(ksp, x0 ? PETSC_TRUE : PETSC_FALSE));
    PCHECK(KSPSolve(ksp, b, x));
    KSPConvergedReason reason;
    PetscInt its;
    PCHECK(KSPGetConvergedReason(ksp, &reason));
    PCHECK(KSPGetIterationNumber(ksp, &its));
    const double secs = std::chrono::duration<double>(clock::now() - t0).count();
    PCHECK(KSPDestroy(&ksp));
    PCHECK(VecDestroy(&x));
    if (reason <= 0) throw std::runtime_error("KSP did not converge");
    return {int(its), secs};
}

}  // namespace

int main(int argc, char **argv) {
    if (PetscInitialize(&argc, &argv, nullptr, nullptr)) return 1;
    int status = 0;
    try {
        if (argc < 4) throw std::invalid_argument("usage: darcy_warm_start_petsc MODEL.onnx PROBLEMS.f32 OUT_DIR [COUNT] [STEPS] [LAMBDA_INFER]");
        const std::string out_dir = argv[3];
        const darcy::fields problems = darcy::read_fields(argv[2]);
        const std::size_t count =
            argc > 4 ? std::min<std::size_t>(std::stoul(argv[4]), problems.count) : problems.count;
        piddm::model model(argv[1]);
        surrogate::check_grid(model, problems);
        const piddm_solve_params params = surrogate::forward_params(model, argc, argv, 5);
        const darcy::grid g{problems.nx};
        const std::size_t plane = problems.plane(), field = 2 * plane;
        const surrogate::forward_answers fwd = surrogate::forward(model, problems, count, params);
        const piddm::solve_result &answer = fwd.result;
        const double t_inf = fwd.seconds_per_problem;
        const double tols[3] = {1e-4, 1e-6, 1e-8};
        const char *names[3] = {"1e-4", "1e-6", "1e-8"};
        std::vector<double> iz[3], is[3], sz[3], ss[3];
        for (std::size_t p = 0; p < count; ++p) {
            const darcy::field a = darcy::to_field(problems.at(p, 0), plane);
            Mat A = assemble(g, a);
            Vec b = interior_vec(g, darcy::rhs(g, problems.at(p, 2)));
            Vec x0 = interior_vec(g, darcy::to_field(answer.fields.data() + p * field + plane, plane));
            for (int t = 0; t < 3; ++t) {
                const auto zero = ksp_solve(A, b, nullptr, tols[t]);
                const auto warm = ksp_solve(A, b, x0, tols[t]);
                iz[t].push_back(zero.first), is[t].push_back(warm.first);
                sz[t].push_back(zero.second), ss[t].push_back(warm.second + t_inf);
            }
            PCHECK(VecDestroy(&x0));
            PCHECK(VecDestroy(&b));
            PCHECK(MatDestroy(&A));
        }
        std::printf("warm start (PETSc KSPCG + PCJACOBI): %zu problems, %lld surrogate steps\n", count, (long long)params.steps);
        std::printf("  tolerance | CG iterations zero -> surrogate (saving) | seconds zero -> surrogate incl. inference\n");
        std::ofstream kv(out_dir + "/warm_start_petsc.txt");
        kv << "problems = " << count << "\nranks = 1\nsurrogate_steps = " << params.steps
           << "\ninference_seconds_per_problem = " << t_inf << "\n";
        for (int t = 0; t < 3; ++t) {
            const double mz = darcy::median(iz[t]), ms = darcy::median(is[t]);
            std::printf("  %s      | %7.1f -> %7.1f (%5.1f %%) | %.2e -> %.2e\n", names[t], mz, ms,
                        100 * (1 - ms / mz), darcy::median(sz[t]), darcy::median(ss[t]));
            kv << "iters_zero_" << names[t] << " = " << mz << "\niters_surrogate_" << names[t] << " = " << ms
               << "\nseconds_zero_" << names[t] << " = " << darcy::median(sz[t]) << "\nseconds_surrogate_"
               << names[t] << " = " << darcy::median(ss[t]) << "\n";
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "darcy_warm_start_petsc: %s\n", e.what());
        status = 1;
    }
    PetscFinalize();
    return status;
}
