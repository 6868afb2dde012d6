! Warm-starting a Darcy solver with the surrogate, under MPI.
!
!   mpirun -np 2 darcy_warm_start MODEL.onnx PROBLEMS.f32 OUT_DIR [COUNT] [STEPS]
!
! Each rank loads the model once, takes every nranks-th problem of the problems file (fresh
! coefficients the model never saw), asks the surrogate for u given all of a (piddm solve, its
! problems in one batch), and solves A(a) u = f with Jacobi-PCG from zero and from the surrogate's
! u. ONNX Runtime gets cores / ranks threads per rank so ranks do not oversubscribe the node.
! Rank 0 prints median iterations and seconds (inference included) at relative residuals 1e-4,
! 1e-6 and 1e-8 and writes OUT_DIR/warm_start_fortran.txt and .f32 (fields of the first problems).
program darcy_warm_start
  use, intrinsic :: iso_c_binding
  use, intrinsic :: iso_fortran_env, only: real64
  use mpi
  use piddm
  use darcy_solver
  implicit none

  interface
    integer(c_int) function get_nprocs() bind(c, name="get_nprocs")
      import :: c_int
    end function
  end interface

  integer, parameter :: NT = 3, MAXIT = 5000
  real(real64), parameter :: TOLS(NT) = [1d-4, 1d-6, 1d-8]
  character(len=4), parameter :: TOL_NAMES(NT) = ["1e-4", "1e-6", "1e-8"]
  character(len=1024) :: model_path, problems_path, out_dir, arg
  real(c_float), allocatable :: problems(:, :, :, :), obs(:, :, :, :), answer(:, :, :, :), res(:, :, :)
  real(c_float), allocatable :: figure(:, :, :, :)
  integer(c_int8_t), allocatable :: mask(:, :, :, :)
  real(real64), allocatable :: a(:, :), b(:, :), x(:, :), y(:, :), uref(:, :), usur(:, :)
  real(real64), allocatable :: iz(:, :), is(:, :), sz(:, :), ss(:, :), err_sur(:), err_pcg(:), usur_all(:, :, :)
  real(c_double) :: mean_sq
  real(real64) :: t0, t_inf, stencil_diff, stencil_scale, secs(NT)
  integer :: ierr, rank, nranks, count, steps, nx, ny, nloc, k, p, t, iters(NT), threads
  type(piddm_model) :: model
  type(piddm_options) :: opts
  type(piddm_solve_params) :: params
  type(piddm_solve_report) :: report

  call MPI_Init(ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
  call MPI_Comm_size(MPI_COMM_WORLD, nranks, ierr)
  if (command_argument_count() < 3) then
    if (rank == 0) print '(a)', "usage: darcy_warm_start MODEL.onnx PROBLEMS.f32 OUT_DIR [COUNT] [STEPS]"
    call MPI_Finalize(ierr)
    stop 2
  end if
  call get_command_argument(1, model_path)
  call get_command_argument(2, problems_path)
  call get_command_argument(3, out_dir)
  call read_fields(trim(problems_path), problems)
  nx = size(problems, 1); ny = size(problems, 2)
  count = size(problems, 4)
  if (command_argument_count() >= 4) then
    call get_command_argument(4, arg); read (arg, *) k
    count = min(count, k)
  end if

  threads = max(1, get_nprocs()/nranks)
  opts = piddm_default_options()
  opts%intra_op_threads = threads
  call model%load(trim(model_path), opts)
  if (model%nc /= 2 .or. model%nx /= nx .or. model%ny /= ny) error stop "the model's grid differs from the problems'"
  params = model%default_solve_params()
  if (command_argument_count() >= 5) then
    call get_command_argument(5, arg); read (arg, *) steps
    params%steps = steps
  end if
  params%seed = 1 + rank

  ! this rank's problems: rank+1, rank+1+nranks, ...
  nloc = 0
  do p = rank + 1, count, nranks
    nloc = nloc + 1
  end do
  allocate (iz(NT, count), is(NT, count), sz(NT, count), ss(NT, count), err_sur(count), err_pcg(count))
  allocate (usur_all(nx, ny, count))
  iz = 0; is = 0; sz = 0; ss = 0; err_sur = 0; err_pcg = 0; usur_all = 0
  stencil_diff = 0; stencil_scale = 0; t_inf = 0

  if (nloc > 0) then
    ! forward problem for the surrogate: all of a observed, u free
    allocate (obs(nx, ny, 2, nloc), mask(nx, ny, 2, nloc), answer(nx, ny, 2, nloc), res(nx, ny, nloc))
    obs = 0; mask = 0
    k = 0
    do p = rank + 1, count, nranks
      k = k + 1
      obs(:, :, 1, k) = problems(:, :, 1, p)
      mask(:, :, 1, k) = 1
    end do
    t0 = MPI_Wtime()
    call model%solve(obs, mask, params, answer, report)
    t_inf = (MPI_Wtime() - t0)/nloc

    ! this solver's operator against the model's residual, on the surrogate's answers
    call model%residual(answer, res, mean_sq)
    allocate (a(nx, ny), b(nx, ny), x(nx, ny), y(nx, ny), uref(nx, ny), usur(nx, ny))
    k = 0
    do p = rank + 1, count, nranks
      k = k + 1
      a = problems(:, :, 1, p)
      b = 0
      b(2:nx - 1, 2:ny - 1) = problems(2:nx - 1, 2:ny - 1, 3, p)
      uref = problems(:, :, 2, p)
      usur = answer(:, :, 2, k)
      call apply_darcy(a, usur, y)
      y(2:nx - 1, 2:ny - 1) = y(2:nx - 1, 2:ny - 1) - b(2:nx - 1, 2:ny - 1)
      stencil_diff = max(stencil_diff, maxval(abs(y - res(:, :, k))))
      stencil_scale = max(stencil_scale, maxval(abs(res(:, :, k))))

      x = 0
      call pcg(a, b, x, TOLS, iters, secs, MAXIT)
      iz(:, p) = iters; sz(:, p) = secs
      err_pcg(p) = rel_l2(x, uref)
      x = usur
      call pcg(a, b, x, TOLS, iters, secs, MAXIT)
      is(:, p) = iters; ss(:, p) = secs + t_inf
      err_sur(p) = rel_l2(usur, uref)
      usur_all(:, :, p) = usur
    end do
  end if

  call MPI_Allreduce(MPI_IN_PLACE, iz, size(iz), MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call MPI_Allreduce(MPI_IN_PLACE, is, size(is), MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call MPI_Allreduce(MPI_IN_PLACE, sz, size(sz), MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call MPI_Allreduce(MPI_IN_PLACE, ss, size(ss), MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call MPI_Allreduce(MPI_IN_PLACE, err_sur, count, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call MPI_Allreduce(MPI_IN_PLACE, err_pcg, count, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call MPI_Allreduce(MPI_IN_PLACE, usur_all, size(usur_all), MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call MPI_Allreduce(MPI_IN_PLACE, stencil_diff, 1, MPI_DOUBLE_PRECISION, MPI_MAX, MPI_COMM_WORLD, ierr)
  call MPI_Allreduce(MPI_IN_PLACE, stencil_scale, 1, MPI_DOUBLE_PRECISION, MPI_MAX, MPI_COMM_WORLD, ierr)
  call MPI_Allreduce(MPI_IN_PLACE, t_inf, 1, MPI_DOUBLE_PRECISION, MPI_MAX, MPI_COMM_WORLD, ierr)

  if (rank == 0) then
    print '(a,i0,a,i0,a,i0,a,i0,a)', "warm start (Fortran): ", count, " problems on ", nranks, " rank(s), ", &
      threads, " ONNX Runtime thread(s) per rank, ", params%steps, " surrogate steps"
    print '(a,es9.2,a,es9.2,a)', "  this operator against the model's residual: max difference ", stencil_diff, &
      " (largest residual ", stencil_scale, ")"
    print '(a,es9.2)', "  PCG at 1e-8 against the problems' solver u: largest relative L2 ", maxval(err_pcg)
    if (stencil_diff > 1d-3*max(1d0, stencil_scale)) error stop "this solver's operator differs from the model's"
    if (maxval(err_pcg) > 1d-4) error stop "PCG disagrees with the problems' reference solutions"
    if (any(iz < 0) .or. any(is < 0)) error stop "PCG did not reach 1e-8"
    print '(a,f6.2,a,f7.4,a)', "  surrogate u: median relative L2 ", 100*median(err_sur), " %, ", t_inf, &
      " s per problem (slowest rank)"
    print '(a)', "  tolerance | CG iterations zero -> surrogate (saving) | seconds zero -> surrogate incl. inference"
    do t = 1, NT
      print '(2x,a,6x,a,f7.1,a,f7.1,a,f6.1,a,es9.2,a,es9.2)', TOL_NAMES(t), " | ", median(iz(t, :)), " -> ", &
        median(is(t, :)), " (", 100*(1 - median(is(t, :))/median(iz(t, :))), " %) | ", median(sz(t, :)), " -> ", &
        median(ss(t, :))
    end do
    call write_results()
    allocate (figure(nx, ny, 4, min(count, 4)))
    do p = 1, min(count, 4)
      figure(:, :, 1, p) = problems(:, :, 1, p)
      figure(:, :, 2, p) = problems(:, :, 2, p)
      figure(:, :, 3, p) = real(usur_all(:, :, p), c_float)
      figure(:, :, 4, p) = real(usur_all(:, :, p), c_float) - problems(:, :, 2, p)
    end do
    call write_fields(trim(out_dir)//"/warm_start_fortran.f32", figure)
  end if
  call model%free()
  call MPI_Finalize(ierr)

contains

  subroutine write_results()
    integer :: unit
    open (newunit=unit, file=trim(out_dir)//"/warm_start_fortran.txt", status="replace", action="write")
    write (unit, '(a,i0)') "problems = ", count
    write (unit, '(a,i0)') "ranks = ", nranks
    write (unit, '(a,i0)') "threads_per_rank = ", threads
    write (unit, '(a,i0)') "surrogate_steps = ", params%steps
    write (unit, '(a,es12.5)') "inference_seconds_per_problem = ", t_inf
    write (unit, '(a,es12.5)') "surrogate_rel_l2_u = ", median(err_sur)
    write (unit, '(a,es12.5)') "stencil_max_difference = ", stencil_diff
    do t = 1, NT
      write (unit, '(a,a,a,f0.1)') "iters_zero_", TOL_NAMES(t), " = ", median(iz(t, :))
      write (unit, '(a,a,a,f0.1)') "iters_surrogate_", TOL_NAMES(t), " = ", median(is(t, :))
      write (unit, '(a,a,a,es12.5)') "seconds_zero_", TOL_NAMES(t), " = ", median(sz(t, :))
      write (unit, '(a,a,a,es12.5)') "seconds_surrogate_", TOL_NAMES(t), " = ", median(ss(t, :))
    end do
    close (unit)
  end subroutine
end program
