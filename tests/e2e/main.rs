//! End-to-end tests: real images built by `brig build` (real Debian kernels),
//! booted in QEMU by `brig run` (each in a network namespace of its own),
//! driven through the serial console, ssh and QMP, as a user would.
//! Images are built once per run and shared by the tests that boot them;
//! the tests run under the scheduler in harness.rs (longest first, as many
//! guests at once as there are cores).

mod boot;
mod build;
mod console;
mod cpu;
mod disk_image;
mod docker;
mod guest;
mod harness;
mod isolated_net;
mod metadata;
mod network;
mod raspberry_pi;
mod services;
mod state;
mod updates;
mod user_services;

/// Every test, with about the seconds it takes here (2 cores, TCG, with the
/// rest of the suite beside it; the first to need an image builds it): the
/// scheduler starts the longest first. A new test's figure comes from its
/// first run (the harness prints every test's time and CPU time).
fn main() -> std::process::ExitCode {
    harness::main(vec![
        test!(raspberry_pi::pi_cards_boot_in_qemu_make_their_state_partition_and_answer_ssh, 600),
        test!(disk_image::qemu_x86_64_state_survives_power_cuts_while_writing, 300),
        test!(docker::swarm::qemu_x86_64_nodes_form_a_swarm_from_config_and_reschedule_a_lost_replica, 300, whole_machine),
        test!(docker::single_node::qemu_x86_64_runs_the_users_containers_with_docker, 200),
        test!(services::qemu_x86_64_pid1_stays_responsive_under_a_flood_and_the_watchdog_resets_it_when_wedged, 120),
        test!(build::two_builds_of_the_same_inputs_are_identical, 100),
        test!(updates::pc_x86_64_rolls_back_by_itself_from_a_version_that_panics_and_one_without_network, 330, light),
        test!(updates::pc_x86_64_power_cuts_during_an_upgrade_always_leave_one_whole_version, 300),
        test!(updates::pc_x86_64_updates_over_http_to_slot_b_refuses_a_tampered_bundle_and_keeps_data, 140),
        test!(updates::pc_x86_64_installs_itself_from_a_usb_stick_onto_the_machines_disk, 120),
        test!(disk_image::pc_x86_64_raw_image_boots_with_uefi_grows_into_its_disk_and_keeps_state, 100),
        test!(state::qemu_x86_64_keeps_host_keys_homes_and_config_on_the_state_partition, 95),
        test!(console::qemu_aarch64_console_over_ssh, 75),
        test!(network::qemu_aarch64_gets_an_address_resolves_names_and_sets_its_clock_from_ntp, 60),
        test!(network::qemu_x86_64_gets_an_address_resolves_names_and_sets_its_clock_from_ntp, 57),
        test!(console::qemu_x86_64_console_over_ssh, 56),
        test!(disk_image::qemu_x86_64_qcow2_image_boots_with_uefi_to_ssh, 47),
        test!(user_services::qemu_x86_64_mounts_a_data_disk_and_runs_a_service_from_it, 46),
        test!(services::qemu_aarch64_runs_services_as_containers_with_limits_readiness_restarts_and_brigctl, 43),
        test!(network::qemu_x86_64_runs_an_lacp_bond_and_a_vlan_against_dnsmasq_inside_the_guest, 34),
        test!(services::qemu_x86_64_runs_services_as_containers_with_limits_readiness_restarts_and_brigctl, 34),
        test!(raspberry_pi::brig_flash_writes_and_verifies_a_card_and_refuses_disks_it_must_not_touch, 26),
        test!(console::qemu_x86_64_netboot_image_with_a_default_config, 22),
        test!(build::offline_rebuild_uses_the_cache, 20),
        test!(metadata::qemu_x86_64_gets_its_config_from_a_nocloud_seed_url, 17),
        test!(network::qemu_x86_64_builds_a_bond_a_vlan_and_a_bridge_and_fails_over, 17),
        test!(raspberry_pi::pi_cards_hold_what_their_board_files_name, 17),
        test!(metadata::qemu_x86_64_gets_its_config_from_an_ec2_metadata_service, 12),
        test!(build::a_missing_kernel_option_fails_the_build_naming_it, 5),
        test!(build::a_module_the_fragment_misnames_is_reported_with_the_fix, 5),
        test!(build::manifest_describes_the_image, 5),
        test!(guest::kernel_messages_cutting_into_a_line_are_moved_after_it, 0),
        test!(harness::the_command_line_is_libtests_and_the_longest_tests_go_first, 0),
    ])
}
