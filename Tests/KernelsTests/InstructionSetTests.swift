import CKernels
import Foundation
import Testing

@Suite struct InstructionSetTests {
    @Test("COHORT_ISA caps the kernels' instruction set: scalar uses no AVX and no panels, avx2 no AVX-512")
    func cap() {
        let requested = ProcessInfo.processInfo.environment["COHORT_ISA"]
        switch requested {
        case "scalar":
            #expect(cohort_isa_limit() == 0 && cohort_cpu_has_avx2() == 0 && cohort_cpu_has_vnni() == 0 && cohort_cpu_has_panels() == 0)
        case "avx2":
            #expect(cohort_isa_limit() == 1 && cohort_cpu_has_vnni() == 0 && cohort_cpu_has_panels() == cohort_cpu_has_avx2())
        default:
            #expect(cohort_isa_limit() == 2)
        }
    }
}
