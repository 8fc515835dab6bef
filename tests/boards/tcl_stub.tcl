# Stand-ins for the Vivado commands build.tcl uses, so the generated script can run in plain tclsh.
#
# Each call is appended to $::env(KVB_STUB_LOG) as one JSON line {"cmd": ..., "args": [...]}.
# Commands return plausible handles ("/cell/pin", "/space/SEG_x") and remember what was set, so the
# script's own read-backs see a consistent design. This checks the script's structure and its
# failure paths; it says nothing about what Vivado itself would accept.
#
# Knobs (environment):
#   KVB_STUB_LOG       file to append the JSON lines to (required)
#   KVB_STUB_PORTS     file with "name direction width" lines: the ports of the module reference;
#                      get_bd_pins / get_bd_intf_pins on that cell answer only for these
#   KVB_STUB_OVERRIDE  Tcl dict: PROPERTY -> value, or PROPERTY@object -> value, for get_property
#   KVB_STUB_EMPTY     Tcl list of "command:argument": that call returns nothing
#   KVB_STUB_SLACK     Tcl dict: -setup / -hold -> slack (default 0.100 for both)

namespace eval ::kvstub {
    variable props [dict create]
    variable cells [dict create]
    variable segmap [dict create]
    variable modref ""
    variable ports [dict create]
    variable override [dict create]
    variable empty {}
    variable slack [dict create -setup 0.100 -hold 0.020]
    if {[info exists ::env(KVB_STUB_OVERRIDE)]} { set override $::env(KVB_STUB_OVERRIDE) }
    if {[info exists ::env(KVB_STUB_EMPTY)]} { set empty $::env(KVB_STUB_EMPTY) }
    if {[info exists ::env(KVB_STUB_SLACK)]} { set slack [dict merge $slack $::env(KVB_STUB_SLACK)] }
    if {[info exists ::env(KVB_STUB_PORTS)]} {
        set f [open $::env(KVB_STUB_PORTS)]
        foreach line [split [read $f] \n] {
            if {[llength $line] == 3} { dict set ports [lindex $line 0] [lrange $line 1 2] }
        }
        close $f
    }
}

proc ::kvstub::json {s} {
    set out ""
    foreach ch [split $s ""] {
        scan $ch %c code
        if {$ch eq "\""} { append out "\\\"" } elseif {$ch eq "\\"} { append out "\\\\" } \
        elseif {$code < 32} { append out [format "\\u%04x" $code] } else { append out $ch }
    }
    return "\"$out\""
}

proc ::kvstub::record {cmd arglist} {
    set items {}
    foreach a $arglist { lappend items [json $a] }
    set f [open $::env(KVB_STUB_LOG) a]
    puts $f "{\"cmd\": [json $cmd], \"args\": \[[join $items {, }]\]}"
    close $f
}

proc ::kvstub::emptied {cmd arglist} {
    foreach a $arglist {
        if {[lsearch -exact $::kvstub::empty "$cmd:$a"] >= 0} { return 1 }
    }
    return 0
}

# The last non-option argument of a call (options that take a value are skipped).
proc ::kvstub::target {arglist {valued {}}} {
    set rest {}
    for {set i 0} {$i < [llength $arglist]} {incr i} {
        set a [lindex $arglist $i]
        if {[string index $a 0] eq "-" && ![string is double -strict $a]} {
            if {[lsearch -exact $valued $a] >= 0} { incr i }
            continue
        }
        lappend rest $a
    }
    return $rest
}

proc ::kvstub::norm {path} {
    if {[string index $path 0] ne "/"} { set path "/$path" }
    return $path
}

proc ::kvstub::setprop {obj name value} {
    dict set ::kvstub::props [norm $obj] [string toupper $name] $value
}

proc ::kvstub::getprop {name obj} {
    set obj [norm $obj]
    set key [string toupper $name]
    foreach k [list "$key@$obj" $key] {
        if {[dict exists $::kvstub::override $k]} { return [dict get $::kvstub::override $k] }
    }
    if {[dict exists $::kvstub::props $obj $key]} { return [dict get $::kvstub::props $obj $key] }
    # Values Vivado derives by itself, from what was set.
    set ps "/zynq_ultra_ps_e_0"
    if {$key eq "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ"} {
        set mhz [getprop CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $obj]
        return [format %.6f [expr {$mhz * 0.99999}]]
    }
    if {$key eq "CONFIG.FREQ_HZ" && $obj eq "$ps/pl_clk0"} {
        return [expr {round([getprop CONFIG.PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ $ps] * 1e6)}]
    }
    if {$key eq "CONFIG.DATA_WIDTH" && $obj eq "$ps/M_AXI_HPM0_FPD"} {
        return [getprop CONFIG.PSU__MAXIGP0__DATA_WIDTH $ps]
    }
    if {[regexp {^/zynq_ultra_ps_e_0/S_AXI_HP(\d)_FPD$} $obj -> n]} {
        if {$key eq "CONFIG.DATA_WIDTH"} { return [getprop CONFIG.PSU__SAXIGP[expr {$n + 2}]__DATA_WIDTH $ps] }
        if {$key eq "CONFIG.ID_WIDTH"} { return 6 }
    }
    if {[regexp {^/kvpath_0/(\w+)$} $obj -> intf]} {
        foreach {sig want} {CONFIG.DATA_WIDTH rdata CONFIG.ID_WIDTH arid} {
            if {$key eq $sig && [dict exists $::kvstub::ports ${intf}_$want]} {
                return [lindex [dict get $::kvstub::ports ${intf}_$want] 1]
            }
        }
    }
    if {$key eq "PROGRESS"} { return "100%" }
    if {$key eq "STATUS"} { return "route_design Complete!" }
    if {$key eq "SLACK" && [regexp {^/timing_path(-\w+)$} $obj -> kind]} {
        return [dict get $::kvstub::slack $kind]
    }
    return ""
}

# Pins of the module reference exist only if the port list says so; everything else exists.
proc ::kvstub::pin_exists {path intf} {
    if {![regexp {^/kvpath_0/(\w+)$} $path -> name]} { return 1 }
    if {![dict size $::kvstub::ports]} { return 1 }
    if {!$intf} { return [dict exists $::kvstub::ports $name] }
    foreach p [dict keys $::kvstub::ports] {
        if {[string match "${name}_*" $p]} { return 1 }
    }
    return 0
}

# ---- the commands -----------------------------------------------------------------------------

proc create_project {args} {
    ::kvstub::record create_project $args
    set name [lindex [::kvstub::target $args {-part -dir}] 0]
    set i [lsearch -exact $args -part]
    if {$i >= 0} { ::kvstub::setprop /$name PART [lindex $args $i+1] }
    set ::kvstub::project $name
    return $name
}
proc current_project {args} { ::kvstub::record current_project $args; return $::kvstub::project }
proc current_fileset {args} { ::kvstub::record current_fileset $args; return sources_1 }

proc set_property {args} {
    ::kvstub::record set_property $args
    set rest [::kvstub::target $args {-name}]
    if {[lindex $args 0] eq "-dict"} {
        set obj [lindex $args 2]
        foreach {k v} [lindex $args 1] { ::kvstub::setprop $obj $k $v }
    } else {
        lassign $rest name value obj
        ::kvstub::setprop $obj $name $value
    }
    return ""
}
proc get_property {args} {
    ::kvstub::record get_property $args
    lassign [::kvstub::target $args] name obj
    return [::kvstub::getprop $name $obj]
}

foreach cmd {add_files update_compile_order create_bd_design apply_bd_automation validate_bd_design
             save_bd_design launch_runs wait_on_run open_run report_utilization
             report_timing_summary write_bitstream} {
    proc $cmd {args} "::kvstub::record $cmd \$args; return {}"
}

proc create_bd_cell {args} {
    ::kvstub::record create_bd_cell $args
    set name [::kvstub::norm [lindex [::kvstub::target $args {-type -vlnv -reference}] 0]]
    if {[::kvstub::emptied create_bd_cell [list $name]]} { return "" }
    dict set ::kvstub::cells $name $args
    return $name
}
proc create_bd_port {args} {
    ::kvstub::record create_bd_port $args
    set name [::kvstub::norm [lindex [::kvstub::target $args {-dir -from -to -type}] 0]]
    dict set ::kvstub::cells $name port
    return $name
}

# get_bd_* by path: the path if it exists and is not emptied.
proc ::kvstub::lookup {cmd args intf} {
    ::kvstub::record $cmd $args
    set out {}
    foreach p [::kvstub::target $args] {
        set p [::kvstub::norm $p]
        if {[::kvstub::emptied $cmd [list $p]]} { continue }
        set cell "/[lindex [split $p /] 1]"
        if {![dict exists $::kvstub::cells $cell]} { continue }
        if {![::kvstub::pin_exists $p $intf]} { continue }
        lappend out $p
    }
    return $out
}
proc get_bd_cells {args} { return [::kvstub::lookup get_bd_cells $args 0] }
proc get_bd_ports {args} { return [::kvstub::lookup get_bd_ports $args 0] }
proc get_bd_pins {args} { return [::kvstub::lookup get_bd_pins $args 0] }
proc get_bd_intf_pins {args} { return [::kvstub::lookup get_bd_intf_pins $args 1] }

proc connect_bd_net {args} { ::kvstub::record connect_bd_net $args; return "" }
proc connect_bd_intf_net {args} { ::kvstub::record connect_bd_intf_net $args; return "" }

proc get_bd_addr_spaces {args} {
    ::kvstub::record get_bd_addr_spaces $args
    set i [lsearch -exact $args -of_objects]
    if {$i >= 0} {
        set space [lindex $args $i+1]
    } else {
        set space [::kvstub::norm [lindex [::kvstub::target $args] 0]]
    }
    if {[::kvstub::emptied get_bd_addr_spaces [list $space]]} { return "" }
    return $space
}
proc get_bd_addr_segs {args} {
    ::kvstub::record get_bd_addr_segs $args
    set i [lsearch -exact $args -of_objects]
    if {$i < 0} {
        set seg [::kvstub::norm [lindex [::kvstub::target $args] 0]]
        if {[::kvstub::emptied get_bd_addr_segs [list $seg]]} { return "" }
        return $seg
    }
    set of [lindex $args $i+1]
    if {[dict exists $::kvstub::segmap $of]} { return [dict get $::kvstub::segmap $of] }
    # The slave segment of an AXI slave interface.
    if {[regexp {^/kvpath_0/\w+$} $of]} { return "$of/reg0" }
    return ""
}
proc assign_bd_address {args} {
    ::kvstub::record assign_bd_address $args
    set offset [lindex $args [lsearch -exact $args -offset]+1]
    set range [lindex $args [lsearch -exact $args -range]+1]
    set space [lindex $args [lsearch -exact $args -target_address_space]+1]
    set seg [lindex [::kvstub::target $args {-offset -range -target_address_space}] 0]
    set master "$space/SEG_[string map {/ _} [string trimleft $seg /]]"
    dict lappend ::kvstub::segmap $seg $master
    ::kvstub::setprop $master OFFSET $offset
    ::kvstub::setprop $master RANGE $range
    return $master
}

proc get_files {args} { ::kvstub::record get_files $args; return [lindex [::kvstub::target $args] 0] }
proc make_wrapper {args} {
    ::kvstub::record make_wrapper $args
    return "/stub/vivado/kvpath_kv260.gen/sources_1/bd/kvpath_bd/hdl/kvpath_bd_wrapper.v"
}
proc get_runs {args} { ::kvstub::record get_runs $args; return [::kvstub::norm [lindex $args end]] }
proc get_timing_paths {args} {
    ::kvstub::record get_timing_paths $args
    foreach kind {-setup -hold} {
        if {[lsearch -exact $args $kind] >= 0} { return "/timing_path$kind" }
    }
    return "/timing_path-setup"
}
